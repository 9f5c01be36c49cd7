"""Sessions: the connectors' state machine, independent of the OCPP version.

``SessionManager`` turns poll snapshots, tags and CSMS commands into events
(``agent.sessions.events``), which the store writes before anything acts on them.
"""

from agent.sessions.manager import SessionManager

__all__ = ["SessionManager"]
