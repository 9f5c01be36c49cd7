"""Emulated hardware for tests, the demo and the HIL rig.

``model`` (the physics), ``emulator`` (register images, Modbus servers, and the glue
from the model to them), ``scenario`` (timed events as data files in ``scenarios/``),
``rig`` (a whole site from its config: ``evsite hil``) and ``csms`` (a test CSMS).
Nothing here is imported by the agent itself.
"""
