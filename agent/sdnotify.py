"""Talking to systemd through $NOTIFY_SOCKET, without libsystemd.

The unit is ``Type=notify`` with a watchdog: systemd considers the agent started only
when it sends ``READY=1`` (so dependants and ``systemctl start`` wait until the store is
open, the devices are built and the control socket listens), and restarts it when
``WATCHDOG=1`` stops arriving. The protocol is one datagram of ``KEY=VALUE`` lines to a
Unix socket; a leading ``@`` in the address means the Linux abstract namespace.

Without ``$NOTIFY_SOCKET`` (run by hand, in tests, under another supervisor) every call
is a no-op, so the rest of the agent never has to ask whether systemd is there.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("evsite.sdnotify")


class Notifier:
    """Sends state changes to the service manager. Failures are logged, never raised:
    a lost notification must not take the site down (systemd will notice on its own)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read $NOTIFY_SOCKET and $WATCHDOG_USEC (honouring $WATCHDOG_PID: the watchdog
        is meant for that process only, not for children that inherited the variable)."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "").strip()
        if raw:
            try:
                usec = int(raw)
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        pid = env.get("WATCHDOG_PID", "").strip()
        if usec and pid and pid != str(os.getpid()):
            usec = None
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between pets: half the watchdog timeout, as sd_watchdog_enabled(3)
        advises, or None when systemd runs no watchdog for us."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def notify(self, **fields: str) -> bool:
        """Send one datagram; keys are upper-cased (``ready="1"`` -> ``READY=1``).
        Returns whether it was sent."""
        if not self.enabled:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        addr = self.address
        assert addr is not None
        target = "\0" + addr[1:] if addr.startswith("@") else addr
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, target)
        except OSError as exc:
            if not self._warned:  # once: a broken socket would otherwise log every pet
                log.warning("cannot notify systemd at %s: %s", addr, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(ready="1", **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(status=text.replace("\n", " "))

    def watchdog(self) -> bool:
        return self.notify(watchdog="1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(stopping="1", **({"status": status} if status else {}))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
