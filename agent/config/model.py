"""The site config as typed objects: the single description of a site.

Each dataclass field carries its own rules in ``metadata`` (via ``rule``): allowed range
or choices, and a one-line doc used by ``evsite check-config`` messages and by the
config reference in the README. The loader (``agent.config.load``) walks these classes
generically, so adding a setting is adding a field here, nothing else. Unknown keys are
errors. Cross-field rules (a device's bus must exist, unit ids unique per bus...) live in
``agent.config.checks``.

Units: seconds, amps, volts, watts. Phases are 1 or 3; site phases are "L1", "L2", "L3".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PHASE_NAMES = ("L1", "L2", "L3")


def rule(
    default: Any = ...,
    *,
    doc: str,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    choices: tuple[Any, ...] | None = None,
    default_factory: Any = None,
    secret: bool = False,
) -> Any:
    """A dataclass field with its validation rule and doc attached."""
    meta = {"doc": doc, "ge": ge, "le": le, "gt": gt, "choices": choices, "secret": secret}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    if default is ...:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SiteSection:
    name: str = rule("evsite site", doc="human name of the site, shown in status and logs")
    poll_interval: float = rule(1.0, ge=0.1, le=60, doc="seconds between device polls")
    state_dir: str = rule("/var/lib/evsite", doc="directory for the store, control socket and logs")
    log_level: str = rule("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), doc="stdout log level")


@dataclass
class StoreSection:
    path: str = rule("", doc="SQLite file; empty = <state_dir>/evsite.db")
    synchronous: str = rule(
        "FULL", choices=("FULL", "NORMAL"),
        doc="SQLite synchronous mode; FULL survives power loss, NORMAL only process crashes",
    )
    outbox_max: int = rule(100_000, ge=100, doc="most queued uplink messages before the overflow policy applies")
    sample_retention_days: int = rule(35, ge=1, doc="days of meter samples kept in the store")


@dataclass
class UplinkSection:
    enabled: bool = rule(True, doc="connect to a CSMS at all")
    url: str = rule("", doc="CSMS WebSocket URL (ws:// or wss://); the station id is appended")
    station_id: str = rule("", doc="charging station identity presented to the CSMS")
    ocpp: str = rule("1.6", choices=("1.6", "2.0.1"), doc="preferred OCPP version")
    offer_both: bool = rule(False, doc="offer both subprotocols; 'ocpp' decides which is preferred")
    security_profile: int = rule(0, ge=0, le=3, doc="OCPP security profile: 0 none, 1 basic auth, 2 TLS+basic auth, 3 TLS client cert")
    password_file: str = rule("", doc="file (mode 0600) holding the AuthorizationKey for profiles 1 and 2")
    ca_bundle: str = rule("", doc="CA bundle to verify the CSMS certificate; empty = system store")
    client_cert: str = rule("", doc="client certificate (PEM) for security profile 3")
    client_key: str = rule("", doc="client private key (PEM, mode 0600) for security profile 3")
    vendor: str = rule("evsite", doc="chargePointVendor / vendorName in BootNotification")
    model: str = rule("evsite-site", doc="chargePointModel / model in BootNotification")
    serial: str = rule("", doc="serial number in BootNotification")
    call_timeout: float = rule(30.0, gt=0, le=600, doc="seconds to wait for a CALLRESULT")
    backoff_initial: float = rule(1.0, gt=0, le=600, doc="first reconnect delay (s)")
    backoff_max: float = rule(300.0, gt=0, le=3600, doc="largest reconnect delay (s)")
    ping_interval: float = rule(60.0, ge=0, le=3600, doc="WebSocket ping interval (s); 0 disables")
    heartbeat_interval: float = rule(300.0, gt=0, doc="heartbeat interval until the CSMS sets one (s)")


@dataclass
class BusSection:
    id: str = rule(doc="bus name that devices refer to")
    type: Literal["tcp", "rtu"] = rule(choices=("tcp", "rtu"), doc="tcp (Modbus TCP endpoint) or rtu (RS-485 serial line)")
    # tcp
    host: str = rule("", doc="tcp: host or IP address")
    port: int | str = rule("", doc="tcp: port number (default 502); rtu: serial device path")
    # rtu
    baudrate: int = rule(9600, choices=(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200), doc="rtu: baud rate")
    parity: str = rule("N", choices=("N", "E", "O"), doc="rtu: parity")
    stopbits: int = rule(1, choices=(1, 2), doc="rtu: stop bits")
    bytesize: int = rule(8, choices=(7, 8), doc="rtu: data bits")
    # both
    timeout: float = rule(1.0, gt=0, le=30, doc="seconds to wait for an answer")
    retries: int = rule(1, ge=0, le=5, doc="extra attempts after a timeout")
    gap_ms: float | None = rule(None, ge=0, le=5000, doc="pause between requests (ms); default: the largest gap of the profiles on the bus")


@dataclass
class DeviceSection:
    id: str = rule(doc="device name used in logs, status and by other sections")
    profile: str = rule(doc="device profile name (a file in drivers/profiles)")
    bus: str = rule(doc="id of the bus the device is on")
    unit_id: int = rule(1, ge=0, le=255, doc="Modbus unit id (1..247 on RS-485)")
    role: str = rule(choices=("grid_meter", "sub_meter", "charger"), doc="what the device is on this site")
    # chargers
    connector_id: int = rule(0, ge=0, le=999, doc="charger: OCPP connector id (1..)")
    connector_index: int = rule(1, ge=1, le=99, doc="charger: connector number inside a multi-connector device (e.g. CHARX)")
    phases: int = rule(3, choices=(1, 3), doc="charger: phases wired to the charger")
    wiring: list[str] = rule(default_factory=lambda: ["L1", "L2", "L3"], doc="charger: site phase each charger phase is on, e.g. [\"L2\"] for 1-phase on L2")
    min_current: float = rule(6.0, ge=0, le=80, doc="charger: lowest current an EV is run at (A); below it the connector pauses")
    max_current: float = rule(16.0, gt=0, le=80, doc="charger: highest current per phase (A)")
    fixed_current: float | None = rule(None, ge=0, le=80, doc="charger: constant setpoint used without load management (A)")
    failsafe_current: float = rule(6.0, ge=0, le=80, doc="charger: current the charger falls back to if evsite goes silent (A)")
    failsafe_timeout: float = rule(60.0, gt=0, le=3600, doc="charger: seconds of silence before the charger falls back")
    priority: int = rule(1, ge=0, le=9, doc="charger: higher is served first")
    circuit: str = rule("", doc="charger: id of the sub-circuit (limits.circuits) it is behind; empty = site main")
    meter: str = rule("", doc="charger: id of a sub_meter measuring this charger, used for energy")
    free_charging_tag: str = rule("", doc="charger: start sessions without authorization using this idTag")
    can_switch_phases: bool = rule(False, doc="charger: allow 1p/3p switching (only if the profile supports it)")


@dataclass
class CircuitSection:
    id: str = rule(doc="circuit name that chargers refer to")
    fuse_amps: float | list[float] = rule(doc="breaker rating per phase (A); one number or [L1, L2, L3]")
    parent: str = rule("", doc="id of the enclosing circuit; empty = site main")


@dataclass
class LimitsSection:
    fuse_amps: float | list[float] = rule(doc="site main fuse per phase (A); one number or [L1, L2, L3]")
    failsafe_amps: float = rule(6.0, ge=0, doc="total EV current per phase while the grid meter is stale (A)")
    nominal_voltage: float = rule(230.0, ge=100, le=480, doc="phase-to-neutral voltage for W<->A conversion (V)")
    grid_stale_after: float = rule(10.0, gt=0, le=600, doc="seconds without a good grid reading before the failsafe")
    circuits: list[CircuitSection] = rule(default_factory=list, doc="sub-circuits (fuse tree)")


@dataclass
class GpioSection:
    dim_pin: str = rule("", doc="GPIO input of the grid operator's dim contact (e.g. 'GPIO17'); empty = none")
    dim_active_high: bool = rule(True, doc="contact closed reads high")
    dim_power_w: float = rule(4200.0, ge=0, doc="power per controllable device while dimmed (W)")


@dataclass
class ControlSection:
    socket: str = rule("", doc="control API Unix socket; empty = <state_dir>/control.sock")
    group: str = rule("", doc="group allowed to use the control socket; empty = the agent's group")


@dataclass
class SiteConfig:
    site: SiteSection = rule(default_factory=SiteSection, doc="the site")
    store: StoreSection = rule(default_factory=StoreSection, doc="the SQLite store")
    uplink: UplinkSection = rule(default_factory=UplinkSection, doc="the OCPP uplink")
    limits: LimitsSection = rule(doc="grid connection limits")
    buses: list[BusSection] = rule(default_factory=list, doc="Modbus TCP endpoints and RS-485 lines")
    devices: list[DeviceSection] = rule(default_factory=list, doc="meters and chargers")
    gpio: GpioSection = rule(default_factory=GpioSection, doc="GPIO inputs")
    control: ControlSection = rule(default_factory=ControlSection, doc="local control API")

    # -- derived, convenient views (no state of their own) --
    @property
    def store_path(self) -> str:
        return self.store.path or f"{self.site.state_dir}/evsite.db"

    @property
    def control_socket(self) -> str:
        return self.control.socket or f"{self.site.state_dir}/control.sock"

    def chargers(self) -> list[DeviceSection]:
        return [d for d in self.devices if d.role == "charger"]

    def grid_meter(self) -> DeviceSection | None:
        return next((d for d in self.devices if d.role == "grid_meter"), None)

    def bus(self, bus_id: str) -> BusSection:
        return next(b for b in self.buses if b.id == bus_id)

    def device(self, device_id: str) -> DeviceSection:
        return next(d for d in self.devices if d.id == device_id)


def per_phase(value: float | list[float]) -> tuple[float, float, float]:
    """A fuse rating given as one number or [L1, L2, L3], as a triple."""
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    a, b, c = value
    return (float(a), float(b), float(c))
