"""Load management: keep every phase under every limit, share the rest fairly, say why.

Pure parts (no IO): ``model`` (inputs/outputs), ``limits`` (the limits stack),
``network`` (limits as constraints), ``fill`` + ``allocator`` (fair sharing), ``turns``
(paused EVs take turns), ``transitions`` (safe steps between setpoints), ``profiles`` +
``profile_shape`` (OCPP charging-profile math), ``explain`` (text). ``controller`` is the stateful shell the
poller calls. See docs/architecture.md, "Load management (agent/energy)".
"""
