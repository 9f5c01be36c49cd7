"""A small CSMS for tests and the demo: both OCPP versions, every frame logged, faults on
demand.

Each station connection gets the subprotocol it asked for (``ocpp1.6`` or
``ocpp2.0.1``, the station's preference first unless ``prefer`` overrides), and an
``ocpp``-library ChargePoint of that version (handlers.py) answers its CALLs with the
defaults in answers.py or a test's responder.

Frames do not go straight from the socket into the library. The server reads them
itself so that it can:

- log every frame, both directions, before anything else happens (log.py);
- recognise a CALL whose unique id this station already sent (a retransmission after a
  timeout or a reconnect): it is counted, and if it was processed before, the same
  answer is sent again without processing it twice. That is what lets a test check
  exactly-once delivery from the CSMS's side;
- play faults (rules.Fault): CALLERROR, no answer, a dropped socket before or after
  processing, slow answers; and freeze a station's socket (stop reading: pings go
  unanswered, as on a half-open TCP connection);
- route answers to CSMS-initiated calls (``call``) to the test that awaits them.

Station CALLs are answered one at a time per station, in order, by a worker task, so a
slow answer never blocks the answers to the CSMS's own calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import itertools
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, is_dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, unpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from agent.uplink.security import redacting_logger
from hil.csms.answers import Answers, Behaviour, TxRecord
from hil.csms.handlers import CENTRAL
from hil.csms.log import Message, MessageLog, Predicate
from hil.csms.rules import Fault, Faults, TagRule

log = logging.getLogger("hil.csms")
_ocpp_log = logging.getLogger("hil.csms.ocpp")

SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
VERSION_OF = {v: k for k, v in SUBPROTOCOLS.items()}

# Called with every Message the test CSMS logs, in any instance (tests/ocpp_schemas.py
# validates them here). An observer must not raise; it records what it finds.
OBSERVERS: list[Callable[[Message], None]] = []

Responder = Callable[[str, dict[str, Any], dict[str, Any]], "dict[str, Any] | None | Awaitable[dict[str, Any] | None]"]


class CallErrorReply(Exception):
    """The station answered a CSMS call with a CALLERROR."""

    def __init__(self, code: str, description: str, details: Any) -> None:
        super().__init__(f"{code}: {description}")
        self.code, self.description, self.details = code, description, details


@dataclass(frozen=True)
class ServerTls:
    """TLS for the test CSMS; with ``client_ca`` it requires a client certificate
    signed by it (security profile 3)."""

    certfile: str
    keyfile: str
    client_ca: str | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.certfile, self.keyfile)
        if self.client_ca:
            ctx.load_verify_locations(cafile=self.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@dataclass
class _StationMemory:
    """What outlives one connection of a station: the unique ids it sent, and the
    answers to the calls that were processed (replayed on retransmission)."""

    seen: set[str] = field(default_factory=set)
    answers: dict[str, str] = field(default_factory=dict)
    in_progress: set[str] = field(default_factory=set)
    connections: int = 0


class _Tap:
    """The "connection" the ocpp ChargePoint writes its answers to."""

    def __init__(self, link: StationLink) -> None:
        self.link = link

    async def send(self, text: str) -> None:
        await self.link.csms._answer_out(self.link, text)

    async def recv(self) -> str:  # the server reads the socket itself; see module doc
        raise RuntimeError("the test CSMS routes frames itself; ChargePoint.start() is not used")


class StationLink:
    """One station's current connection."""

    def __init__(self, csms: TestCsms, station: str, version: str, ws: ServerConnection, number: int) -> None:
        self.csms = csms
        self.station = station
        self.version = version
        self.ws = ws
        self.number = number          # this station's nth connection to this CSMS
        self.open = True
        self.frozen = False
        self.peer_cert = ws.transport.get_extra_info("peercert") if ws.transport else None
        self.pending: dict[str, tuple[str, asyncio.Future[Message]]] = {}
        self.call_lock = asyncio.Lock()
        self.queue: asyncio.Queue[tuple[Call, str]] = asyncio.Queue()
        self.current: Call | None = None
        self.withhold: dict[str, str] = {}   # unique id -> "never" | "drop": answer computed, not sent
        self.cp = CENTRAL[version](station, _Tap(self), self, logger=_ocpp_log)


class TestCsms:
    """``async with TestCsms(...) as csms:`` then point a station at ``csms.url``."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ocpp: str | tuple[str, ...] = "both",
        prefer: str | None = None,
        tags: TagRule | None = None,
        boot_status: str = "Accepted",
        heartbeat_interval: int = 300,
        log_path: str | os.PathLike[str] | None = None,
        passwords: str | Mapping[str, str] | None = None,
        tls: ServerTls | None = None,
        max_message: int = 1 << 20,
    ) -> None:
        if isinstance(ocpp, str):
            ocpp = tuple(SUBPROTOCOLS) if ocpp == "both" else (ocpp,)
        for v in ocpp:
            if v not in SUBPROTOCOLS:
                raise ValueError(f"test CSMS: unknown OCPP version {v!r}; use 1.6, 2.0.1 or both")
        if prefer is not None and prefer not in ocpp:
            raise ValueError(f"test CSMS: prefer={prefer!r} is not among the served versions {ocpp}")
        self.host = host
        self.port = port
        self.versions = tuple(ocpp)
        self.prefer = prefer
        self.behaviour = Behaviour(boot_status, heartbeat_interval, tags or TagRule())
        self.answers = Answers(self.behaviour)
        self.log = MessageLog(log_path)
        self.passwords = passwords
        self.tls = tls
        self.max_message = max_message
        self.faults = Faults()
        self.stations: dict[str, StationLink] = {}
        self.auth_failures: list[str] = []     # station ids whose credentials were refused
        self._memory: dict[str, _StationMemory] = {}
        self._responders: dict[str, Responder] = {}
        self._ids = itertools.count(1)
        self._sent_calls: dict[str, str] = {}   # unique id -> action of every CSMS call (late answers too)
        self._server: Server | None = None
        self._links_changed = asyncio.Event()

    # ---- lifetime ---------------------------------------------------------------------

    async def start(self) -> TestCsms:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=[Subprotocol(SUBPROTOCOLS[v]) for v in self.versions],
            select_subprotocol=self._select_subprotocol,
            process_request=self._check_auth if self.passwords is not None else None,
            ssl=self.tls.context() if self.tls else None,
            ping_interval=None,
            close_timeout=1.0,
            max_size=self.max_message,
            logger=redacting_logger("hil.csms.websocket"),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("test CSMS listening on %s (OCPP %s)", self.url, " + ".join(self.versions))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            for link in list(self.stations.values()):
                if link.frozen and link.ws.transport is not None:
                    link.ws.transport.abort()   # a frozen socket would wait out the close timeout
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.log.close()

    async def __aenter__(self) -> TestCsms:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL; a station appends ``/<station id>``."""
        scheme = "wss" if self.tls else "ws"
        host = "localhost" if self.tls and self.host in ("127.0.0.1", "localhost") else self.host
        return f"{scheme}://{host}:{self.port}"

    # ---- what tests read --------------------------------------------------------------

    @property
    def transactions(self) -> dict[int | str, TxRecord]:
        return self.answers.transactions

    def messages(
        self,
        station: str | None = None,
        action: str | None = None,
        direction: str | None = None,
        kind: str | None = None,
        *,
        retransmissions: bool = True,
        predicate: Predicate | None = None,
    ) -> list[Message]:
        return self.log.select(station, action, direction, kind, retransmissions=retransmissions, predicate=predicate)

    async def wait_for(self, action: str | None = None, predicate: Predicate | None = None, timeout: float = 5.0, **kw: Any) -> Message:
        """See ``MessageLog.wait_for``: station=, direction= ("in"), kind= ("call"),
        count=, since= (a log position, e.g. ``len(csms.log)`` taken earlier)."""
        return await self.log.wait_for(action, predicate, timeout, **kw)

    def retransmissions(self, station: str | None = None, action: str | None = None) -> int:
        return sum(1 for m in self.log.select(station, action, "in", "call") if m.retransmission)

    def connection_count(self, station: str) -> int:
        mem = self._memory.get(station)
        return mem.connections if mem else 0

    async def wait_connected(self, station: str, timeout: float = 5.0, *, number: int = 1) -> StationLink:
        """The station's link once it is connected for (at least) the ``number``-th time."""

        def ready() -> StationLink | None:
            link = self.stations.get(station)
            return link if link and link.open and link.number >= number else None

        return await self._wait_links(ready, timeout, f"station {station!r} connection #{number}")

    async def wait_disconnected(self, station: str, timeout: float = 5.0) -> None:
        def gone() -> bool | None:
            link = self.stations.get(station)
            return True if link is None or not link.open else None

        await self._wait_links(gone, timeout, f"station {station!r} to disconnect")

    # ---- behaviour a test sets --------------------------------------------------------

    @property
    def tags(self) -> TagRule:
        return self.behaviour.tags

    @tags.setter
    def tags(self, rule: TagRule) -> None:
        self.behaviour.tags = rule

    def respond(self, action: str, responder: Responder | None) -> None:
        """Answer ``action`` with ``responder(station, payload, default_answer)``
        (may be async; returning None keeps the default). None removes it."""
        if responder is None:
            self._responders.pop(action, None)
        else:
            self._responders[action] = responder

    def fail_with(self, action: str, code: str = "InternalError", *, times: int | None = None, description: str = "test CSMS fault") -> None:
        self.faults.set(action, Fault("error", times=times, code=code, description=description))

    def never_answer(self, action: str, *, times: int | None = None, after: bool = False) -> None:
        self.faults.set(action, Fault("never", times=times, after=after))

    def drop_on(self, action: str, *, times: int | None = 1, after: bool = False) -> None:
        self.faults.set(action, Fault("drop", times=times, after=after))

    def delay_answers(self, seconds: float, action: str = "*", *, times: int | None = None) -> None:
        self.faults.set(action, Fault("delay", times=times, seconds=seconds))

    def clear_faults(self, action: str | None = None) -> None:
        self.faults.clear(action)

    def freeze(self, station: str) -> None:
        """Stop reading the station's socket: its pings and frames go unanswered, as
        if the TCP connection had gone half-open."""
        link = self._link(station)
        link.frozen = True
        link.ws.transport.pause_reading()

    def thaw(self, station: str) -> None:
        link = self._link(station)
        link.frozen = False
        link.ws.transport.resume_reading()

    async def disconnect(self, station: str, code: int = 1000, reason: str = "") -> None:
        """Close the station's connection from the CSMS side (closing handshake)."""
        await self._link(station).ws.close(code, reason)

    def abort(self, station: str) -> None:
        """Drop the station's TCP connection without a closing handshake."""
        self._link(station).ws.transport.abort()

    # ---- CSMS-initiated calls ---------------------------------------------------------

    async def call(self, station: str, action: Any, payload: dict[str, Any] | None = None, *, timeout: float = 5.0) -> dict[str, Any]:
        """Send a CALL to a connected station and return its CALLRESULT payload.

        ``action`` is an action name with ``payload`` a JSON object (camelCase, sent as
        is, so a test can send invalid payloads), or an ``ocpp`` call dataclass
        (``ocpp.v16.call.Reset(type="Soft")``). A CALLERROR raises CallErrorReply; no
        answer raises TimeoutError. One CSMS call at a time per station (OCPP rule).
        """
        if is_dataclass(action) and not isinstance(action, type):
            payload = remove_nones(snake_to_camel_case(serialize_as_dict(action)))
            action = type(action).__name__
        if payload is None:
            payload = {}
        link = self._link(station)
        async with link.call_lock:
            uid = f"csms-{next(self._ids)}"
            self._sent_calls[uid] = action
            fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            link.pending[uid] = (action, fut)
            try:
                await self._send(link, json.dumps([2, uid, action, payload], separators=(",", ":")), "call", uid, action, payload)
                async with asyncio.timeout(timeout):
                    reply = await fut
            except TimeoutError:
                raise TimeoutError(f"test CSMS: station {station!r} did not answer {action} within {timeout:g} s") from None
            finally:
                link.pending.pop(uid, None)
        if reply.kind == "error":
            p = reply.payload
            raise CallErrorReply(p["code"], p["description"], p["details"])
        return reply.payload

    async def send_raw(self, station: str, text: str) -> None:
        """Send any text frame (bad-input tests); it is logged like any other."""
        link = self._link(station)
        await self._send(link, text, *_describe(text, None))

    # ---- internals --------------------------------------------------------------------

    def _link(self, station: str) -> StationLink:
        link = self.stations.get(station)
        if link is None or not link.open:
            raise ConnectionError(f"test CSMS: station {station!r} is not connected")
        return link

    async def _wait_links(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        try:
            async with asyncio.timeout(timeout):
                while (hit := ready()) is None:
                    ev = self._links_changed
                    await ev.wait()
                return hit
        except TimeoutError:
            raise TimeoutError(f"test CSMS: waited {timeout:g} s for {what}") from None

    def _notify_links(self) -> None:
        self._links_changed.set()
        self._links_changed = asyncio.Event()

    def _select_subprotocol(self, connection: ServerConnection, offered: Any) -> Subprotocol | None:
        served = [SUBPROTOCOLS[v] for v in self.versions]
        if self.prefer is not None and SUBPROTOCOLS[self.prefer] in offered:
            return Subprotocol(SUBPROTOCOLS[self.prefer])
        for sub in offered:          # the station's order of preference
            if sub in served:
                return Subprotocol(sub)
        return None                  # accepted without one; _handle then closes it

    def _check_auth(self, connection: ServerConnection, request: Request) -> Response | None:
        station = _station_from_path(request.path)
        expected = self.passwords if isinstance(self.passwords, str) else (self.passwords or {}).get(station)
        header = request.headers.get("Authorization")
        ok = False
        if header and expected is not None:
            try:
                user, password = parse_authorization_basic(header)
            except InvalidHeader:
                pass
            else:
                ok = user == station and hmac.compare_digest(password.encode(), expected.encode())
        if ok:
            return None
        self.auth_failures.append(station)
        log.info("refused credentials of station %r", station)
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid credentials\n")
        response.headers["WWW-Authenticate"] = 'Basic realm="evsite test CSMS", charset="UTF-8"'
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        station = _station_from_path(ws.request.path if ws.request else "/")
        if ws.subprotocol is None:
            await ws.close(1002, "no OCPP subprotocol agreed")
            return
        version = VERSION_OF[ws.subprotocol]
        old = self.stations.get(station)
        if old is not None and old.open and old.ws.transport is not None:
            old.ws.transport.abort()   # the station came back: its old socket is stale
        mem = self._memory.setdefault(station, _StationMemory())
        mem.connections += 1
        link = StationLink(self, station, version, ws, mem.connections)
        self.stations[station] = link
        self._notify_links()
        log.info("station %r connected (OCPP %s, connection #%d)", station, version, link.number)
        worker = asyncio.create_task(self._work(link, mem), name=f"csms-worker-{station}")
        try:
            async for raw in ws:
                await self._frame_in(link, mem, raw)
        except ConnectionClosed:
            pass
        finally:
            link.open = False
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            while not link.queue.empty():   # never answered: a retransmission is processed afresh
                mem.in_progress.discard(link.queue.get_nowait()[0].unique_id)
            for _, fut in link.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"station {station!r} disconnected before answering"))
            self._notify_links()
            log.info("station %r disconnected", station)

    async def _frame_in(self, link: StationLink, mem: _StationMemory, raw: str | bytes) -> None:
        common = {"station": link.station, "version": link.version, "direction": "in"}
        if isinstance(raw, bytes):
            self._log(raw=repr(raw[:200]), kind="invalid", unique_id=None, action=None, payload="binary frame", **common)
            return
        try:
            msg = unpack(raw)
        except OCPPError as exc:
            self._log(raw=raw, kind="invalid", unique_id=None, action=None, payload=str(exc), **common)
            return
        if isinstance(msg, Call):
            uid = msg.unique_id
            again = uid in mem.seen
            self._log(raw=raw, kind="call", unique_id=uid, action=msg.action, payload=msg.payload, retransmission=again, **common)
            if again:
                if uid in mem.answers:
                    cached = mem.answers[uid]
                    await self._send(link, cached, *_describe(cached, msg.action))
                    return
                if uid in mem.in_progress:
                    return   # the first copy is still being answered
            mem.seen.add(uid)
            mem.in_progress.add(uid)
            link.queue.put_nowait((msg, raw))
            return
        pending = link.pending.get(msg.unique_id)
        action = self._sent_calls.get(msg.unique_id)
        if isinstance(msg, CallError):
            payload: Any = {"code": msg.error_code, "description": msg.error_description, "details": msg.error_details}
            entry = self._log(raw=raw, kind="error", unique_id=msg.unique_id, action=action, payload=payload, **common)
        else:
            entry = self._log(raw=raw, kind="result", unique_id=msg.unique_id, action=action, payload=msg.payload, **common)
        if pending and not pending[1].done():
            pending[1].set_result(entry)

    async def _work(self, link: StationLink, mem: _StationMemory) -> None:
        """Answer the station's CALLs one at a time, in order."""
        while True:
            msg, raw = await link.queue.get()
            fault = self.faults.take(msg.action)
            if fault is not None:
                # an unprocessed call: a retransmission of it will be processed afresh
                if fault.kind == "error":
                    mem.in_progress.discard(msg.unique_id)
                    err = CallError(msg.unique_id, fault.code, fault.description, {})
                    await self._send(link, err.to_json(), "error", msg.unique_id, msg.action, _error_payload(err))
                    continue
                if fault.kind in ("never", "drop") and not fault.after:
                    mem.in_progress.discard(msg.unique_id)
                    if fault.kind == "drop":
                        link.ws.transport.abort()
                    continue
                if fault.kind == "delay":
                    await asyncio.sleep(fault.seconds)
                if fault.after:
                    link.withhold[msg.unique_id] = fault.kind
            link.current = msg
            try:
                await link.cp.route_message(raw)
            except ConnectionClosed:
                pass
            finally:
                link.current = None
                mem.in_progress.discard(msg.unique_id)

    async def answer(self, link: StationLink, action: str) -> dict[str, Any]:
        """Called by the version handlers: the answer payload for the current CALL."""
        assert link.current is not None and link.current.action == action
        payload = link.current.payload
        answer = self.answers.default(link.station, link.version, action, payload)
        responder = self._responders.get(action)
        if responder is not None:
            custom = responder(link.station, payload, answer)
            if inspect.isawaitable(custom):
                custom = await custom
            if custom is not None:
                answer = custom
        return answer

    async def _answer_out(self, link: StationLink, text: str) -> None:
        """The ChargePoint's answer to a station CALL: remember it, then send (or
        withhold it, when a fault says so)."""
        kind, uid, action, payload = _describe(text, link.current.action if link.current else None)
        mem = self._memory[link.station]
        if uid is not None:
            mem.answers[uid] = text
        withheld = link.withhold.pop(uid, None) if uid is not None else None
        if withheld == "never":
            return
        if withheld == "drop":
            link.ws.transport.abort()
            return
        await self._send(link, text, kind, uid, action, payload)

    async def _send(self, link: StationLink, text: str, kind: str, uid: str | None, action: str | None, payload: Any) -> None:
        self._log(station=link.station, version=link.version, direction="out", kind=kind, unique_id=uid, action=action, payload=payload, raw=text)
        with contextlib.suppress(ConnectionClosed):
            await link.ws.send(text)

    def _log(self, **fields: Any) -> Message:
        msg = self.log.append(**fields)
        for observer in list(OBSERVERS):
            observer(msg)
        return msg


def _station_from_path(path: str) -> str:
    segment = urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1]
    return unquote(segment)


def _error_payload(err: CallError) -> dict[str, Any]:
    return {"code": err.error_code, "description": err.error_description, "details": err.error_details}


def _describe(text: str, action: str | None) -> tuple[str, str | None, str | None, Any]:
    """(kind, unique id, action, payload) of an outgoing frame, for the log."""
    try:
        frame = json.loads(text)
        if frame[0] == 2:
            return "call", frame[1], frame[2], frame[3]
        if frame[0] == 3:
            return "result", frame[1], action, frame[2]
        if frame[0] == 4:
            return "error", frame[1], action, {"code": frame[2], "description": frame[3], "details": frame[4]}
    except (ValueError, IndexError, KeyError, TypeError):
        pass
    return "invalid", None, action, text
