"""evsite agent: the site brain (config, site model, sessions, energy, store, uplink, supervisor, CLI)."""

__version__ = "0.1.0"
