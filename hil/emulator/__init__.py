"""Emulated Modbus devices: register images built from device profiles (image.py),
served by real pymodbus servers on loopback TCP or a pseudo-terminal (server.py)."""

from hil.emulator.image import RegisterImage
from hil.emulator.server import RequestRecord, RtuServerHandle, TcpServerHandle, serve_rtu_pty, serve_tcp

__all__ = ["RegisterImage", "RequestRecord", "RtuServerHandle", "TcpServerHandle", "serve_rtu_pty", "serve_tcp"]
