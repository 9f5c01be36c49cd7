"""Cross-field rules about the buses, the fuse tree, the uplink and the timing.

The uplink rules matter most off site: a wrong URL or a missing password file is only
noticed when the CSMS never sees the station, and a password in a URL would end up in
logs. File rules are warnings, because a config is often checked on a laptop before the
files exist on the gateway; a password file readable by others is a warning too
(invariant 5 says it must be 0600; the agent refuses nothing it could still fix).
"""

from __future__ import annotations

import os
import re
import stat
from urllib.parse import urlsplit

from agent.config.bind import shown
from agent.config.checkctx import Ctx, check, did_you_mean, listing
from agent.config.model import per_phase

RTU_KEYS = ("baudrate", "parity", "stopbits", "bytesize")
#: OCPP identifierString (a-z A-Z 0-9 * - _ = : + | @ .) minus ':', which would break
#: HTTP basic auth (the station id is the user name), at most 48 characters
STATION_ID_RE = re.compile(r"^[A-Za-z0-9*\-_=+|@.]{1,48}$")
GPIO_RE = re.compile(r"^(GPIO|BCM|BOARD|WPI)\d{1,2}$|^J8:\d{1,2}$|^\d{1,2}$")


def _bus(i: int, key: str | None = None) -> tuple:
    return ("buses", i) if key is None else ("buses", i, key)


@check("An rtu bus has a serial port path, a tcp bus a host (and a port 1..65535 or none for 502); "
       "no two buses share a serial port")
def bus_endpoints(ctx: Ctx) -> None:
    ports: dict[str, int] = {}
    endpoints: dict[tuple[str, int], int] = {}
    for i, b in enumerate(ctx.cfg.buses):
        uses = [_bus(i, "type")]
        if b.type == "rtu":
            if isinstance(b.port, int):
                ctx.error(_bus(i, "port"), f'an rtu bus needs the serial device path, e.g. port = "/dev/ttyUSB0", '
                                           f"got the number {b.port}", uses=uses)
            elif not b.port:
                ctx.error(_bus(i, "port"), 'an rtu bus needs the serial device path, e.g. port = "/dev/ttyUSB0"',
                          uses=uses)
            elif b.port in ports:
                ctx.error(_bus(i, "port"), f"serial port {b.port} is already buses[{ports[b.port]}]: "
                                           "one RS-485 line is one bus", uses=uses)
            else:
                ports[b.port] = i
            if b.host and ctx.wrote(_bus(i, "host")):
                ctx.warn(_bus(i, "host"), "only applies to tcp buses; ignored on an rtu bus", uses=uses)
        elif b.type == "tcp":
            if not b.host:
                ctx.error(_bus(i, "host"), 'a tcp bus needs host = "<address of the Modbus TCP device or gateway>"',
                          uses=uses)
            port = 502 if b.port == "" else b.port
            if not isinstance(port, int) or not 1 <= port <= 65535:
                ctx.error(_bus(i, "port"), f"a tcp port must be a number 1..65535, got {shown(port)}", uses=uses)
            elif b.host:
                key = (b.host, port)
                if key in endpoints:
                    ctx.warn(_bus(i, "host"), f"same endpoint {b.host}:{port} as buses[{endpoints[key]}]: "
                                              "put its devices on that bus (many chargers allow few connections)")
                endpoints.setdefault(key, i)
            for key in RTU_KEYS:
                if ctx.wrote(_bus(i, key)):
                    ctx.warn(_bus(i, key), "only applies to rtu buses; ignored on a tcp bus", uses=uses)


@check("A bus's gap is shorter than its timeout, every bus has devices, and one round of "
       "requests on an RS-485 bus fits in the poll interval (warnings)")
def bus_timing(ctx: Ctx) -> None:
    poll = ctx.cfg.site.poll_interval
    for i, b in enumerate(ctx.cfg.buses):
        devices = [d for d in ctx.cfg.devices if d.bus == b.id]
        if not devices and b.id:
            ctx.warn(_bus(i, "id"), f'no device is on bus "{b.id}"', uses=[("devices",)])
        if b.gap_ms is not None and b.gap_ms / 1000 >= b.timeout:
            ctx.warn(_bus(i, "gap_ms"), f"{b.gap_ms:g} ms between requests is not shorter than "
                                        f"timeout ({b.timeout:g} s)", uses=[_bus(i, "timeout")])
        gap = b.gap_ms
        if gap is None:  # the default: the largest gap any profile on the bus needs
            gaps = [getattr(ctx.profile(d.profile), "gap_ms", 0.0) for d in devices if ctx.profile(d.profile)]
            gap = max(gaps, default=None)
        if b.type == "rtu" and gap and devices:
            busy = len(devices) * gap / 1000
            if busy >= poll:
                ctx.warn(_bus(i, "gap_ms"), f"{len(devices)} devices x {gap:g} ms gap take {busy:g} s, "
                                            f"not less than site.poll_interval ({poll:g} s)",
                         uses=[("site", "poll_interval")])


def _fuse_ok(ctx: Ctx, path: tuple, value: float | list[float]) -> bool:
    if isinstance(value, list):
        if len(value) != 3:
            ctx.error(path, f"must be one number or [L1, L2, L3] (3 numbers), got {len(value)} numbers")
            return False
        ok = True
        for k, v in enumerate(value):
            if v <= 0:
                ctx.error(path + (k,), f"must be > 0 A, got {v:g}")
                ok = False
        return ok
    if value <= 0:
        ctx.error(path, f"must be > 0 A, got {value:g}")
        return False
    return True


@check("Fuse ratings are one positive number or [L1, L2, L3]; failsafe_amps is below the site fuse; "
       "grid_stale_after covers at least 2 polls")
def limits(ctx: Ctx) -> None:
    lim = ctx.cfg.limits
    path = ("limits", "fuse_amps")
    if _fuse_ok(ctx, path, lim.fuse_amps) and not ctx.is_bad(path):
        smallest = min(per_phase(lim.fuse_amps))
        if lim.failsafe_amps > smallest:
            ctx.error(("limits", "failsafe_amps"), f"{lim.failsafe_amps:g} A is above the site fuse "
                                                   f"({smallest:g} A)", uses=[path])
    poll = ctx.cfg.site.poll_interval
    if lim.grid_stale_after < 2 * poll:
        ctx.error(("limits", "grid_stale_after"),
                  f"{lim.grid_stale_after:g} s must be at least 2 x site.poll_interval ({2 * poll:g} s), "
                  "or the grid meter counts as stale between polls", uses=[("site", "poll_interval")])


@check("Circuit parents exist and form a tree (no cycles); a circuit fuse above its parent's is a warning")
def circuits(ctx: Ctx) -> None:
    items = ctx.cfg.limits.circuits
    by_id = {c.id: c for c in items}
    fuses_ok = {}
    for i, c in enumerate(items):
        fuses_ok[c.id] = _fuse_ok(ctx, ("limits", "circuits", i, "fuse_amps"), c.fuse_amps)
    for i, c in enumerate(items):
        path = ("limits", "circuits", i, "parent")
        if c.parent and c.parent not in by_id:
            ctx.error(path, f'no circuit "{c.parent}"{did_you_mean(c.parent, by_id)}; circuits: {listing(by_id)}')
            continue
        chain, cur = [c.id], c
        while cur.parent and cur.parent in by_id:
            if cur.parent in chain:
                if cur.parent == c.id:  # report a cycle once per member, at each member
                    ctx.error(path, "circuits form a cycle: " + " -> ".join(chain + [c.id]))
                break
            chain.append(cur.parent)
            cur = by_id[cur.parent]
        parent_fuse = by_id[c.parent].fuse_amps if c.parent else ctx.cfg.limits.fuse_amps
        parent_ok = fuses_ok.get(c.parent, False) if c.parent else not ctx.is_bad(("limits", "fuse_amps"))
        if fuses_ok[c.id] and parent_ok and _valid_fuse(parent_fuse):
            mine, theirs = per_phase(c.fuse_amps), per_phase(parent_fuse)
            if any(a > b for a, b in zip(mine, theirs)):
                where = f'circuit "{c.parent}"' if c.parent else "the site fuse"
                ctx.warn(("limits", "circuits", i, "fuse_amps"),
                         f"{_fmt(mine)} A is above {where} ({_fmt(theirs)} A); the smaller one limits anyway")


def _valid_fuse(value: float | list[float]) -> bool:
    values = value if isinstance(value, list) else [value]
    return (not isinstance(value, list) or len(value) == 3) and all(v > 0 for v in values)


def _fmt(triple: tuple[float, float, float]) -> str:
    return f"{triple[0]:g}" if len(set(triple)) == 1 else "/".join(f"{v:g}" for v in triple)


@check("The uplink URL is ws:// or wss:// with a host and no credentials, required with station_id when "
       "enabled; station_id is 1..48 URL-safe characters; security profiles 2/3 use wss, 1/2 have a "
       "password_file, 3 has client_cert and client_key")
def uplink(ctx: Ctx) -> None:
    up = ctx.cfg.uplink
    u = lambda key: ("uplink", key)  # noqa: E731
    if up.enabled and not up.url:
        ctx.error(u("url"), 'required while the uplink is enabled, e.g. url = "wss://csms.example.com/ocpp" '
                            "(or set enabled = false)", uses=[u("enabled")])
    scheme = ""
    if up.url:
        parts = urlsplit(up.url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss"):
            ctx.error(u("url"), f"must start with ws:// or wss://, got {parts.scheme + '://' if parts.scheme else 'no scheme'}")
        elif parts.username is not None or parts.password is not None:
            ctx.error(u("url"), "must not carry credentials: put the password in password_file "
                                "(security profile 1 or 2)")
        elif not parts.hostname:
            ctx.error(u("url"), "has no host")
        elif parts.query or parts.fragment:
            ctx.error(u("url"), "must not have a ?query or #fragment: the station id is appended to its path")
    if up.enabled and not up.station_id:
        ctx.error(u("station_id"), "required while the uplink is enabled: the identity the CSMS knows this site by",
                  uses=[u("enabled")])
    elif up.station_id and not STATION_ID_RE.match(up.station_id):
        ctx.error(u("station_id"), f"must be 1..48 characters from A-Z a-z 0-9 * - _ = + | @ . "
                                   f"(it goes into the URL and the basic-auth user name), got {shown(up.station_id)}")
    sp = up.security_profile
    uses = [u("security_profile")]
    if sp in (2, 3) and up.url and scheme == "ws":
        ctx.error(u("url"), f"security profile {sp} needs TLS: use wss://", uses=uses)
    if sp in (1, 2) and not up.password_file:
        ctx.error(u("password_file"), f"security profile {sp} needs password_file (the AuthorizationKey)", uses=uses)
    if sp == 3:
        for key in ("client_cert", "client_key"):
            if not getattr(up, key):
                ctx.error(u(key), f"security profile 3 needs {key} (PEM file)", uses=uses)
    _ignored(ctx, sp, scheme)
    _files(ctx)


def _ignored(ctx: Ctx, sp: int, scheme: str) -> None:
    up = ctx.cfg.uplink
    uses = [("uplink", "security_profile")]
    if up.password_file and sp not in (1, 2):
        ctx.warn(("uplink", "password_file"), f"ignored: security profile {sp} does not use a password", uses=uses)
    for key in ("client_cert", "client_key"):
        if getattr(up, key) and sp != 3:
            ctx.warn(("uplink", key), f"ignored: only security profile 3 uses a client certificate", uses=uses)
    if up.ca_bundle and scheme == "ws":
        ctx.warn(("uplink", "ca_bundle"), "ignored: a ws:// URL uses no TLS", uses=[("uplink", "url")])


def _files(ctx: Ctx) -> None:
    """Existence and permissions of the uplink's files, where the setting uses them."""
    up = ctx.cfg.uplink
    sp = up.security_profile
    wanted = [("ca_bundle", False)]
    if sp in (1, 2):
        wanted.append(("password_file", True))
    if sp == 3:
        wanted += [("client_cert", False), ("client_key", True)]
    for key, secret in wanted:
        name = getattr(up, key)
        if not name:
            continue
        path = ("uplink", key)
        try:
            st = os.stat(name)
        except FileNotFoundError:
            ctx.warn(path, f"{name} does not exist (yet): the uplink cannot connect without it")
            continue
        except OSError as exc:
            ctx.warn(path, f"{name} cannot be checked: {exc.strerror}")
            continue
        if not stat.S_ISREG(st.st_mode):
            ctx.warn(path, f"{name} is not a regular file")
        elif secret and st.st_mode & 0o077:
            ctx.warn(path, f"{name} is open to group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                           f"it holds a secret, chmod 600 it")
        elif not os.access(name, os.R_OK):
            ctx.warn(path, f"{name} is not readable by this user")


@check("The uplink's backoff_initial <= backoff_max; the dim contact is a GPIO name like GPIO17")
def timing_and_gpio(ctx: Ctx) -> None:
    up = ctx.cfg.uplink
    if up.backoff_initial > up.backoff_max:
        ctx.error(("uplink", "backoff_initial"), f"{up.backoff_initial:g} s is above backoff_max ({up.backoff_max:g} s)",
                  uses=[("uplink", "backoff_max")])
    pin = ctx.cfg.gpio.dim_pin
    if pin and not GPIO_RE.match(pin):
        ctx.error(("gpio", "dim_pin"), f'must be a pin name such as "GPIO17", "BOARD11" or "J8:11", got {shown(pin)}')
