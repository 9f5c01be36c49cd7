"""The one WebSocket to the CSMS, kept up for as long as the agent runs.

``UplinkConnection.run(session)`` connects to ``url/station_id`` offering the OCPP
subprotocols in the configured order, runs ``session(link)`` (a version adapter: the 1.6
or 2.0.1 ChargePoint plus its loops) for the lifetime of that connection, and when the
connection ends for any reason waits a jittered, growing delay (backoff.py) and connects
again. The adapter never reconnects by itself and never sees a half-dead socket: when
the socket closes, its task is cancelled.

Liveness is the WebSocket ping (OCPP's WebSocketPingInterval): a CSMS that stops
answering pings, or a TCP connection that went half-open (a NAT dropped it, a cellular
modem re-attached), is detected within ping_interval + ping_timeout (+ close_timeout to
give up on the closing handshake), not when the next OCPP CALL times out.

Secrets: the Basic auth header is built in security.py and handed to websockets as a
header, never put in the URL (URLs end up in exception texts). websockets logs the
handshake headers at DEBUG; its logger here is wrapped so every line it writes is
redacted first, whatever handlers the process has installed.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from agent import __version__
from agent.clock import Clock, SystemClock
from agent.uplink.backoff import Backoff
from agent.uplink.security import Credentials, build_credentials, describe_tls_failure, redacting_logger

log = logging.getLogger("evsite.uplink")

SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
VERSION_OF = {v: k for k, v in SUBPROTOCOLS.items()}


class ConnState(enum.Enum):
    IDLE = "idle"              # run() not started
    CONNECTING = "connecting"  # TCP/TLS/HTTP handshake under way
    CONNECTED = "connected"    # the session (adapter) is running
    WAITING = "waiting"        # backing off before the next attempt
    STOPPED = "stopped"        # run() returned


@dataclass(frozen=True)
class Link:
    """One established connection, as a version adapter sees it."""

    ws: ClientConnection       # has recv()/send(): what ocpp's ChargePoint needs
    version: str               # "1.6" or "2.0.1"
    subprotocol: str           # "ocpp1.6" or "ocpp2.0.1"
    number: int                # 1 for the first connection of this run, then 2, ...
    connected_at: float        # Clock.monotonic() when the handshake completed


Session = Callable[[Link], Awaitable[None]]
Hook = Callable[..., Any]


@dataclass(frozen=True)
class UplinkOptions:
    url: str                                  # ws:// or wss:// CSMS base URL
    station_id: str
    versions: tuple[str, ...] = ("1.6",)      # offered, preferred first
    credentials: Credentials = field(default_factory=lambda: Credentials(profile=0))
    ping_interval: float | None = 60.0        # None or 0: no pings
    ping_timeout: float | None = None         # None: same as ping_interval
    open_timeout: float = 10.0                # TCP + TLS + HTTP upgrade
    close_timeout: float = 5.0                # waiting for the closing handshake
    max_message: int = 1 << 20                # largest incoming message (bytes)
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    stable_after: float = 60.0                # a connection this old resets the backoff

    def __post_init__(self) -> None:
        if not self.station_id:
            raise ValueError("uplink station_id is empty")
        if not self.versions:
            raise ValueError("uplink offers no OCPP version")
        for v in self.versions:
            if v not in SUBPROTOCOLS:
                raise ValueError(f"unknown OCPP version {v!r}: use one of {', '.join(SUBPROTOCOLS)}")
        if len(set(self.versions)) != len(self.versions):
            raise ValueError(f"OCPP version offered twice: {self.versions}")
        scheme = urlsplit(self.url).scheme.lower()
        if scheme not in ("ws", "wss"):
            raise ValueError(f"CSMS URL {self.url!r} must start with ws:// or wss://")
        if "@" in urlsplit(self.url).netloc:
            raise ValueError("CSMS URL must not carry user:password; use security_profile and password_file")
        if self.max_message < 1024:
            raise ValueError(f"max_message {self.max_message} is too small for any OCPP message")

    @property
    def endpoint(self) -> str:
        """``url`` + ``/`` + the station id, percent-encoded as one path segment."""
        return self.url.rstrip("/") + "/" + quote(self.station_id, safe="")

    @property
    def effective_ping_timeout(self) -> float | None:
        if not self.ping_interval:
            return None
        return self.ping_timeout if self.ping_timeout is not None else self.ping_interval

    @classmethod
    def from_config(cls, section: Any, **overrides: Any) -> UplinkOptions:
        """From ``SiteConfig.uplink``: reads the password file and builds the TLS context
        now, so a bad file stops the agent at start with a clear message."""
        versions = (section.ocpp,)
        if section.offer_both:
            versions += tuple(v for v in SUBPROTOCOLS if v != section.ocpp)
        creds = build_credentials(
            url=section.url,
            station_id=section.station_id,
            profile=section.security_profile,
            password_file=section.password_file or None,
            ca_bundle=section.ca_bundle or None,
            client_cert=section.client_cert or None,
            client_key=section.client_key or None,
        )
        kwargs: dict[str, Any] = dict(
            url=section.url,
            station_id=section.station_id,
            versions=versions,
            credentials=creds,
            ping_interval=section.ping_interval or None,
            backoff_initial=section.backoff_initial,
            backoff_max=max(section.backoff_max, section.backoff_initial),
        )
        kwargs.update(overrides)
        return cls(**kwargs)


class _AttemptFailed(Exception):
    pass


class UplinkConnection:
    """Keeps one connection to the CSMS; see the module docstring.

    Hooks (sync or async; an exception in a hook is logged, never fatal):
    ``on_connected(ws, subprotocol)``, ``on_disconnected(reason)``,
    ``on_security_event(kind, tech_info)`` for TLS failures (the adapters queue the
    matching SecurityEventNotification).
    """

    def __init__(
        self,
        options: UplinkOptions,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_connected: Hook | None = None,
        on_disconnected: Hook | None = None,
        on_security_event: Hook | None = None,
    ) -> None:
        self.options = options
        self.clock = clock or SystemClock()
        self.backoff = Backoff(
            initial=options.backoff_initial, maximum=options.backoff_max, rng=rng or random.Random()
        )
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.on_security_event = on_security_event
        self.state = ConnState.IDLE
        self.link: Link | None = None
        self.connections = 0          # successful handshakes
        self.failed_attempts = 0      # attempts that never reached CONNECTED
        self.last_error: str | None = None
        self.last_disconnect: str | None = None
        self.next_delay: float | None = None
        self._stop = asyncio.Event()
        self.attempts = 0             # connection attempts started
        self._waiters: list[tuple[Callable[[UplinkConnection], bool], asyncio.Future[None]]] = []
        self._ws_log = redacting_logger("evsite.uplink.websocket")

    # ---- what others read -------------------------------------------------------------

    @property
    def negotiated(self) -> str | None:
        """The OCPP version of the current connection ("1.6" / "2.0.1"), None when down."""
        return self.link.version if self.link and self.state is ConnState.CONNECTED else None

    @property
    def connected(self) -> bool:
        return self.state is ConnState.CONNECTED

    async def wait_until(self, predicate: Callable[[UplinkConnection], bool], timeout: float | None = None) -> None:
        """Until ``predicate(self)`` holds; checked now and at every state change."""
        if predicate(self):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def wait_state(self, *states: ConnState, timeout: float | None = None) -> ConnState:
        """Until the state is one of ``states`` (now or later). For tests and the supervisor."""
        await self.wait_until(lambda c: c.state in states, timeout)
        return self.state

    async def wait_connected(self, timeout: float | None = None) -> Link:
        await self.wait_state(ConnState.CONNECTED, timeout=timeout)
        assert self.link is not None
        return self.link

    # ---- control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Close the connection cleanly (code 1000) and make ``run`` return."""
        self._stop.set()

    async def run(self, session: Session | None = None) -> None:
        """Connect, run ``session`` per connection, reconnect; until ``stop()`` or cancel."""
        self._stop.clear()
        try:
            while not self._stop.is_set():
                self.attempts += 1
                self._set_state(ConnState.CONNECTING)
                try:
                    ws = await self._open()
                except _AttemptFailed as failed:
                    self.failed_attempts += 1
                    self.last_error = str(failed)
                else:
                    started = self.clock.monotonic()
                    reason = await self._serve(ws, session or _discard)
                    self.last_disconnect = reason
                    if self.clock.monotonic() - started >= self.options.stable_after:
                        self.backoff.reset()
                if self._stop.is_set():
                    break
                self.next_delay = self.backoff.next_delay()
                self._set_state(ConnState.WAITING)
                log.info("reconnecting to the CSMS in %.1f s (attempt %d)", self.next_delay, self.backoff.attempt)
                await self._sleep_unless_stopped(self.next_delay)
        finally:
            self.link = None
            self._set_state(ConnState.STOPPED)

    # ---- one attempt ------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        o = self.options
        offered = [Subprotocol(SUBPROTOCOLS[v]) for v in o.versions]
        try:
            ws = await connect(
                o.endpoint,
                subprotocols=offered,
                additional_headers=o.credentials.headers(),
                ssl=o.credentials.tls,
                user_agent_header=f"evsite/{__version__}",
                proxy=None,
                open_timeout=o.open_timeout,
                ping_interval=o.ping_interval or None,
                ping_timeout=o.effective_ping_timeout,
                close_timeout=o.close_timeout,
                max_size=o.max_message,
                logger=self._ws_log,
            )
        except InvalidURI as exc:
            raise ValueError(f"CSMS URL {o.endpoint!r} is not a valid WebSocket URL: {exc}") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure to connect is retried after a delay
            raise _AttemptFailed(self._explain_failure(exc)) from None
        if ws.subprotocol is None:
            await ws.close(1002, "no OCPP subprotocol agreed")
            msg = f"the CSMS agreed to none of the offered subprotocols ({', '.join(offered)})"
            log.error("%s: closing", msg)
            raise _AttemptFailed(msg)
        return ws

    def _explain_failure(self, exc: BaseException) -> str:
        o = self.options
        tls = describe_tls_failure(exc)
        if tls is not None:
            kind, sentence = tls
            log.error("TLS failure connecting to %s: %s", o.url, sentence)
            self._fire(self.on_security_event, kind, sentence)
            return sentence
        if isinstance(exc, InvalidStatus):
            code = exc.response.status_code
            if code == 401:
                msg = f"the CSMS refused our credentials (HTTP 401) for station {o.station_id!r}"
            elif code == 403:
                msg = f"the CSMS forbids station {o.station_id!r} (HTTP 403)"
            elif code == 404:
                msg = f"the CSMS answered HTTP 404 for {o.endpoint}: unknown station id or wrong URL path"
            else:
                msg = f"the CSMS refused the WebSocket upgrade with HTTP {code}"
            log.error("%s", msg)
            return msg
        if isinstance(exc, InvalidHandshake):
            msg = f"WebSocket handshake with the CSMS failed: {exc}"
        elif isinstance(exc, TimeoutError):
            msg = f"no answer from the CSMS at {o.url} within {o.open_timeout:g} s"
        elif isinstance(exc, OSError):
            msg = f"cannot reach the CSMS at {o.url}: {exc.strerror or exc}"
        else:
            msg = f"connecting to the CSMS failed: {type(exc).__name__}: {exc}"
        log.warning("%s", msg)
        return msg

    async def _serve(self, ws: ClientConnection, session: Session) -> str:
        """Run the session until the socket closes, the session ends, or stop(). Returns
        why the connection ended (for logs and ``on_disconnected``)."""
        subprotocol = str(ws.subprotocol)
        self.connections += 1
        link = Link(ws, VERSION_OF[subprotocol], subprotocol, self.connections, self.clock.monotonic())
        self.link = link
        self.last_error = None
        log.info("connected to %s as %s (OCPP %s)", self.options.url, self.options.station_id, link.version)
        self._set_state(ConnState.CONNECTED)
        await self._call_hook(self.on_connected, ws, subprotocol)
        adapter = asyncio.create_task(session(link), name=f"uplink-session-{link.number}")
        closed = asyncio.create_task(ws.wait_closed(), name="uplink-wait-closed")
        stopping = asyncio.create_task(self._stop.wait(), name="uplink-wait-stop")
        reason: str | None = None
        try:
            done, _ = await asyncio.wait({adapter, closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if adapter in done and not closed.done():
                exc = adapter.exception()
                if exc is None:
                    await ws.close(1000, "session ended")
                    reason = "the OCPP session ended"
                elif (unresponsive := _find(exc, CsmsUnresponsive)) is not None:
                    log.warning("%s: closing the connection to start afresh", unresponsive)
                    await ws.close(1011, "no answers")
                    reason = str(unresponsive)
                elif not _only_closed(exc):
                    log.error("OCPP session failed; closing the connection", exc_info=exc)
                    await ws.close(1011, "station internal error")
                    reason = f"the OCPP session failed: {type(exc).__name__}: {exc}"
            elif stopping in done and not closed.done():
                await ws.close(1000, "station shutting down")
                reason = "stopped"
            if reason is None:
                await ws.wait_closed()
                reason = _close_reason(ws)
        finally:
            for t in (adapter, closed, stopping):
                t.cancel()
            await asyncio.gather(adapter, closed, stopping, return_exceptions=True)
            if ws.state.name != "CLOSED":  # cancelled from outside: close as cleanly as we can
                await ws.close(1001, "station going away")
            self.link = None
        log.warning("disconnected from the CSMS: %s", reason)
        await self._call_hook(self.on_disconnected, reason)
        return reason

    # ---- helpers ----------------------------------------------------------------------

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        sleeper = asyncio.create_task(self.clock.sleep(seconds), name="uplink-backoff")
        stopping = asyncio.create_task(self._stop.wait(), name="uplink-wait-stop")
        try:
            await asyncio.wait({sleeper, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopping.cancel()
            await asyncio.gather(sleeper, stopping, return_exceptions=True)

    def _set_state(self, state: ConnState) -> None:
        self.state = state
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate(self):
                fut.set_result(None)

    async def _call_hook(self, hook: Hook | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("uplink hook %s failed", getattr(hook, "__name__", hook))

    def _fire(self, hook: Hook | None, *args: Any) -> None:
        """A hook called from sync code: coroutines run as tasks we do not wait for."""
        if hook is None:
            return
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:
            log.exception("uplink hook %s failed", getattr(hook, "__name__", hook))


async def _discard(link: Link) -> None:
    """The session when none is given: keep reading so pings and closes are processed."""
    async for message in link.ws:
        log.debug("no OCPP adapter attached; dropped a %d-character message", len(message))


class CsmsUnresponsive(ConnectionError):
    """Raised by an adapter when the CSMS stopped answering CALLs on a socket that is
    still up: the connection is closed and made again (a fresh TCP connection, maybe
    another CSMS node), rather than the same message sent on it forever."""


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            if (hit := _find(e, kind)) is not None:
                return hit
    return None


def _only_closed(exc: BaseException) -> bool:
    """True when ``exc`` is (a group of nothing but) ConnectionClosed: a normal end."""
    if isinstance(exc, ConnectionClosed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_closed(e) for e in exc.exceptions)
    return False


def _close_reason(ws: ClientConnection) -> str:
    rcvd, sent = ws.protocol.close_rcvd, ws.protocol.close_sent
    if rcvd is not None:
        text = f" {rcvd.reason!r}" if rcvd.reason else ""
        return f"the CSMS closed the connection (code {rcvd.code}{text})"
    if sent is not None:
        if sent.reason == "keepalive ping timeout":
            return "no pong from the CSMS within the ping timeout: connection presumed dead"
        return f"we closed the connection (code {sent.code} {sent.reason!r})"
    return "the connection was lost without a closing handshake"
