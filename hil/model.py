"""The emulated site's physics: EVs, chargers, the grid connection and its meters.

Pure and clock-driven: nothing here does IO or reads the time. The rig advances the
model with ``SiteModel.advance_to(clock.monotonic())`` and copies readings into
register images; unit tests call ``step(dt)`` by hand. The model is deliberately
simple, but honest about the behaviours the controller depends on:

- A charger offers min(setpoint, its own max) per phase; a setpoint below its minimum
  (6 A) or a disabled charger offers nothing (pause). A charger with a watchdog falls
  back to its failsafe current when the controller has written nothing for the
  failsafe timeout, and returns to the setpoint on the next write, as real ones do.
- An EV draws min(offer, its own limit) on min(its phases, the charger's phases) after
  a short ramp delay, tapers above ``taper_soc`` and stops when full, keeping the plug
  in (state B by default, or C at 0 A: both are what real EVs do).
- A grid meter reads a per-phase base load plus every charger on the site phases it is
  wired to (a 1-phase charger wired to L2 loads only L2); a sub-meter reads only the
  chargers behind it. Voltage sags a little with the phase current (a source
  impedance), power is V * I per phase (unity power factor), energy integrates power.

Faults a test can inject: ``ChargerModel.reboot`` (a power cycle: the charger forgets
everything the controller wrote) and ``ChargerModel.ignore_setpoint`` (broken firmware
offers a fixed current whatever it is told).

Integration is explicit Euler over steps of at most ``MAX_STEP`` seconds: energy for a
step uses the currents that held during it, then EV states and draws are updated for
the new time. A step never puts more energy into a battery than it has room for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

PHASES = ("L1", "L2", "L3")
NOMINAL_VOLTAGE = 230.0
FREQUENCY = 50.0
#: source impedance per phase (ohm): 0.02 ohm sags 1.3 V at 63 A
SAG_OHMS = 0.02
#: longest step of the integration (s): keeps ramp delay and taper accurate
MAX_STEP = 1.0
#: below the taper a tapering EV never draws less than this fraction of its maximum
TAPER_FLOOR = 0.1
IEC_MIN_CURRENT = 6.0

Triple = tuple[float, float, float]


@dataclass
class Ev:
    """One electric vehicle: a battery and an on-board charger."""

    capacity_kwh: float = 50.0
    #: state of charge, 0..1
    soc: float = 0.3
    #: most current per phase the on-board charger takes (A)
    max_current: float = 16.0
    phases: int = 3
    #: seconds from the charger offering current to the EV drawing it
    ramp_delay: float = 2.0
    #: above this state of charge the EV draws less and less
    taper_soc: float = 0.8
    #: IEC 61851 state the EV shows when full: "B" (opens S2) or "C" (stays at 0 A)
    full_state: str = "B"
    rfid: str = ""
    name: str = "ev"

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.capacity_kwh, (int, float)) and 0 < self.capacity_kwh <= 1000):
            problems.append(f"capacity_kwh must be > 0 and <= 1000, got {self.capacity_kwh!r}")
        if not (isinstance(self.soc, (int, float)) and 0 <= self.soc <= 1):
            problems.append(f"soc must be between 0 and 1, got {self.soc!r}")
        if not (isinstance(self.max_current, (int, float)) and 0 < self.max_current <= 80):
            problems.append(f"max_current must be > 0 and <= 80 A, got {self.max_current!r}")
        if self.phases not in (1, 3) or isinstance(self.phases, bool):
            problems.append(f"phases must be 1 or 3, got {self.phases!r}")
        if not (isinstance(self.ramp_delay, (int, float)) and 0 <= self.ramp_delay <= 600):
            problems.append(f"ramp_delay must be between 0 and 600 s, got {self.ramp_delay!r}")
        if not (isinstance(self.taper_soc, (int, float)) and 0 < self.taper_soc <= 1):
            problems.append(f"taper_soc must be > 0 and <= 1, got {self.taper_soc!r}")
        if self.full_state not in ("B", "C"):
            problems.append(f"full_state must be 'B' or 'C', got {self.full_state!r}")
        if not isinstance(self.rfid, str):
            problems.append(f"rfid must be text, got {self.rfid!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self.soc = float(self.soc)

    @property
    def full(self) -> bool:
        return self.soc >= 1.0 - 1e-9

    @property
    def room_wh(self) -> float:
        return max(0.0, (1.0 - self.soc) * self.capacity_kwh * 1000.0)

    def current_limit(self) -> float:
        """What the EV takes per phase now: its max, less above the taper, 0 when full."""
        if self.full:
            return 0.0
        if self.soc <= self.taper_soc or self.taper_soc >= 1.0:
            return self.max_current
        fraction = (1.0 - self.soc) / (1.0 - self.taper_soc)
        return self.max_current * max(TAPER_FLOOR, fraction)

    def charge(self, wh: float) -> float:
        """Store up to ``wh``; returns what the battery took."""
        took = min(max(0.0, wh), self.room_wh)
        self.soc = min(1.0, self.soc + took / (self.capacity_kwh * 1000.0))
        return took


class ChargerModel:
    """One charger connector as the EV and the controller see it.

    Controller side: ``command`` (setpoint, enable, phases, failsafe settings) and
    ``contact`` (a keep-alive); every one of them resets the watchdog. EV side:
    ``plug``/``unplug``. ``update(now)`` recomputes state and draw; ``integrate`` adds
    energy for a step. Readings: ``state``, ``currents`` (per charger phase),
    ``energy_wh`` (lifetime), ``session_wh`` (since plug-in), ``offered``.
    """

    def __init__(
        self,
        name: str,
        *,
        phases: int = 3,
        wiring: Sequence[str] | None = None,
        min_current: float = IEC_MIN_CURRENT,
        max_current: float = 32.0,
        setpoint: float = 0.0,
        enabled: bool = True,
        failsafe_current: float = 0.0,
        failsafe_timeout: float | None = None,
        watchdog: bool = False,
        energy_wh: float = 0.0,
        now: float = 0.0,
    ) -> None:
        if phases not in (1, 3):
            raise ValueError(f"{name}: phases must be 1 or 3, got {phases!r}")
        wiring = tuple(wiring) if wiring is not None else PHASES[:phases]
        if len(wiring) != phases or any(p not in PHASES for p in wiring) or len(set(wiring)) != phases:
            raise ValueError(f"{name}: wiring must name {phases} distinct site phase(s) of L1, L2, L3, got {list(wiring)}")
        if not 0 <= min_current <= max_current:
            raise ValueError(f"{name}: need 0 <= min_current <= max_current, got {min_current} and {max_current}")
        self.name = name
        self.wired_phases = phases
        self.wiring = wiring
        self.min_current = float(min_current)
        self.max_current = float(max_current)
        self.setpoint = float(setpoint)
        self.enabled = bool(enabled)
        self.phases = phases                      # active phases (phase switching)
        self.failsafe_current = float(failsafe_current)
        self.failsafe_timeout = failsafe_timeout
        self.watchdog = watchdog
        self.last_contact = now
        self.energy_wh = float(energy_wh)
        self.session_wh = 0.0
        self.ev: Ev | None = None
        self.plugged_at: float | None = None
        self.now = now
        self.state = "A"
        self.currents: Triple = (0.0, 0.0, 0.0)
        self.voltages: Triple = (0.0, 0.0, 0.0)
        self.power = 0.0
        self._offer_since: float | None = None
        self._site: SiteModel | None = None
        self.writes = 0
        #: fault injection: a broken charger offers this many amps whatever it is told
        #: (``None``: it obeys its setpoint)
        self.disobey: float | None = None
        #: what the controller-side settings are after a power cycle
        self._power_on = (self.setpoint, self.enabled, self.phases, self.failsafe_current, failsafe_timeout, watchdog)

    # -- controller side -----------------------------------------------------------------
    def contact(self, now: float) -> None:
        """The controller wrote something: the watchdog starts over."""
        self.last_contact = max(self.last_contact, now)
        self.writes += 1
        self._changed(now)

    def command(
        self,
        now: float,
        *,
        current: float | None = None,
        enabled: bool | None = None,
        phases: int | None = None,
        failsafe_current: float | None = None,
        failsafe_timeout: float | None = None,
    ) -> None:
        """A write from the controller (any subset of the settings)."""
        if current is not None:
            if not (math.isfinite(current) and current >= 0):
                raise ValueError(f"{self.name}: current must be a finite number >= 0, got {current!r}")
            self.setpoint = float(current)
        if enabled is not None:
            self.enabled = bool(enabled)
        if phases is not None:
            if phases not in (1, 3):
                raise ValueError(f"{self.name}: phases must be 1 or 3, got {phases!r}")
            self.phases = min(phases, self.wired_phases)
        if failsafe_current is not None:
            if not (math.isfinite(failsafe_current) and failsafe_current >= 0):
                raise ValueError(f"{self.name}: failsafe_current must be >= 0, got {failsafe_current!r}")
            self.failsafe_current = float(failsafe_current)
        if failsafe_timeout is not None:
            if not (math.isfinite(failsafe_timeout) and failsafe_timeout > 0):
                raise ValueError(f"{self.name}: failsafe_timeout must be > 0, got {failsafe_timeout!r}")
            self.failsafe_timeout = float(failsafe_timeout)
            self.watchdog = True
        self.contact(now)

    def reboot(self, now: float) -> None:
        """A power cycle: everything the controller wrote is forgotten (setpoint, enable,
        phases, failsafe settings back to their power-on values); the EV stays plugged."""
        (self.setpoint, self.enabled, self.phases, self.failsafe_current, self.failsafe_timeout,
         self.watchdog) = self._power_on
        self.last_contact = max(self.last_contact, now)   # the watchdog starts over at boot
        self._offer_since = None
        self._changed(now)

    def ignore_setpoint(self, amps: float | None, now: float) -> None:
        """Fault injection: from now on offer ``amps`` (up to the hardware max) whatever
        the controller writes, as a charger with broken firmware does; None obeys again."""
        self.disobey = None if amps is None else float(amps)
        self._changed(now)

    def silent(self, now: float | None = None) -> bool:
        """True while the watchdog holds the charger at its failsafe current."""
        now = self.now if now is None else now
        return (self.watchdog and self.failsafe_timeout is not None
                and now - self.last_contact >= self.failsafe_timeout)

    def offered(self, now: float | None = None) -> float:
        """The current the charger offers the EV per phase (0 = paused)."""
        if self.disobey is not None:
            return min(self.disobey, self.max_current)
        if not self.enabled:
            return 0.0
        target = self.failsafe_current if self.silent(now) else self.setpoint
        amps = min(target, self.max_current)
        return amps if amps >= self.min_current and amps > 0 else 0.0

    # -- EV side --------------------------------------------------------------------------
    def plug(self, ev: Ev, now: float) -> None:
        if self.ev is not None:
            raise ValueError(f"{self.name}: an EV ({self.ev.name}) is already plugged in")
        self.ev = ev
        self.plugged_at = now
        self.session_wh = 0.0
        self._offer_since = None
        self._changed(now)

    def unplug(self, now: float) -> Ev | None:
        ev, self.ev = self.ev, None
        self.plugged_at = None
        self._changed(now)
        return ev

    def _changed(self, now: float) -> None:
        self.update(now)
        if self._site is not None:
            self._site.settle()

    # -- physics ----------------------------------------------------------------------------
    def update(self, now: float) -> None:
        """State and draw at ``now`` (after a step, a command or a plug event)."""
        self.now = max(self.now, now)
        ev = self.ev
        offer = self.offered(now)
        if ev is None:
            self.state, draw, self._offer_since = "A", 0.0, None
        elif offer <= 0:
            self.state, draw, self._offer_since = "B", 0.0, None
        elif ev.full:
            self.state, draw = ev.full_state, 0.0
        else:
            if self._offer_since is None:
                self._offer_since = now
            self.state = "C"
            ramped = now - self._offer_since >= ev.ramp_delay - 1e-9
            draw = min(offer, ev.current_limit()) if ramped else 0.0
        n = min(ev.phases, self.phases) if ev is not None else 0
        self.currents = tuple(draw if i < n else 0.0 for i in range(3))  # type: ignore[assignment]

    def ramp_ends(self) -> float | None:
        """When a ramping EV starts drawing (the model steps exactly to it), else None."""
        if self.ev is None or self._offer_since is None or self.state != "C":
            return None
        end = self._offer_since + self.ev.ramp_delay
        return end if end > self.now + 1e-9 else None

    def site_currents(self) -> dict[str, float]:
        """This charger's current on each site phase, per its wiring."""
        out = dict.fromkeys(PHASES, 0.0)
        for i, phase in enumerate(self.wiring):
            out[phase] += self.currents[i]
        return out

    def set_voltages(self, site_voltages: dict[str, float]) -> None:
        self.voltages = tuple(site_voltages[self.wiring[i]] if i < len(self.wiring) else 0.0
                              for i in range(3))  # type: ignore[assignment]
        self.power = sum(v * i for v, i in zip(self.voltages, self.currents))

    def integrate(self, dt: float) -> float:
        """Add the energy of a step of ``dt`` s at the present draw; returns Wh delivered."""
        wh = self.power * dt / 3600.0
        if self.ev is not None:
            wh = self.ev.charge(wh)
        else:
            wh = 0.0
        self.energy_wh += wh
        self.session_wh += wh
        return wh


@dataclass
class MeterReading:
    voltage: Triple
    current: Triple
    power: Triple
    power_total: float
    energy_import_wh: float
    energy_export_wh: float
    frequency: float


@dataclass
class MeterModel:
    """A meter: the grid connection (base load + every charger) or a sub-meter
    (only the chargers named in ``chargers``)."""

    name: str
    #: charger names behind this meter; None = the whole site
    chargers: tuple[str, ...] | None = None
    energy_import_wh: float = 0.0
    energy_export_wh: float = 0.0
    reading: MeterReading | None = field(default=None, repr=False)

    @property
    def whole_site(self) -> bool:
        return self.chargers is None


class GridModel:
    """The grid connection: a base load per phase (A; negative = export, e.g. PV) and
    the voltage it sags to under a phase's total current."""

    def __init__(self, base: float | Sequence[float] = 0.0, *, nominal_voltage: float = NOMINAL_VOLTAGE,
                 sag_ohms: float = SAG_OHMS, frequency: float = FREQUENCY) -> None:
        self.base: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.nominal_voltage = nominal_voltage
        self.sag_ohms = sag_ohms
        self.frequency = frequency
        self.set_base(base)

    def set_base(self, amps: float | Sequence[float] | dict[str, float], phase: str | None = None) -> None:
        """Change the base load: one number for every phase (or for ``phase``), a
        triple, or a dict by phase name."""
        if isinstance(amps, dict):
            items = list(amps.items())
        elif isinstance(amps, (int, float)):
            items = [(phase, amps)] if phase is not None else [(p, amps) for p in PHASES]
        else:
            values = list(amps)
            if len(values) != 3:
                raise ValueError(f"base load needs 3 values (L1, L2, L3), got {values}")
            items = list(zip(PHASES, values))
        for p, a in items:
            if p not in PHASES:
                raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {p!r}")
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
                raise ValueError(f"base load on {p} must be a number of amps, got {a!r}")
            self.base[p] = float(a)

    def voltages(self, phase_currents: dict[str, float]) -> dict[str, float]:
        return {p: self.nominal_voltage - self.sag_ohms * phase_currents[p] for p in PHASES}


class SiteModel:
    """Chargers, meters and the grid, advanced together on one time axis."""

    def __init__(self, grid: GridModel | None = None, *, now: float = 0.0) -> None:
        self.grid = grid or GridModel()
        self.now = now
        self.chargers: dict[str, ChargerModel] = {}
        self.meters: dict[str, MeterModel] = {}
        self.settle()

    def add_charger(self, charger: ChargerModel) -> ChargerModel:
        if charger.name in self.chargers:
            raise ValueError(f"charger {charger.name!r} is already in the site model")
        self.chargers[charger.name] = charger
        charger._site = self
        charger.update(self.now)
        self.settle()
        return charger

    def add_meter(self, name: str, chargers: Iterable[str] | None = None) -> MeterModel:
        if name in self.meters:
            raise ValueError(f"meter {name!r} is already in the site model")
        behind = None if chargers is None else tuple(chargers)
        for c in behind or ():
            if c not in self.chargers:
                raise ValueError(f"meter {name!r}: no charger {c!r} in the site model")
        meter = self.meters[name] = MeterModel(name, behind)
        self.settle()
        return meter

    # -- time --------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance by ``dt`` seconds (in sub-steps of at most ``MAX_STEP``)."""
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"step must be a finite number of seconds >= 0, got {dt!r}")
        end = self.now + dt
        while end - self.now > 1e-12:
            h = min(end - self.now, MAX_STEP)
            ramps = [t for c in self.chargers.values() if (t := c.ramp_ends()) is not None]
            if ramps:
                h = max(1e-9, min(h, min(ramps) - self.now))
            self._step(h)
        self.now = max(self.now, end)

    def advance_to(self, t: float) -> None:
        """Advance to monotonic time ``t`` (no-op if it is not ahead)."""
        if t > self.now:
            self.step(t - self.now)

    def _step(self, h: float) -> None:
        for c in self.chargers.values():
            c.integrate(h)
        for m in self.meters.values():
            assert m.reading is not None
            p = m.reading.power_total * h / 3600.0
            if p >= 0:
                m.energy_import_wh += p
            else:
                m.energy_export_wh -= p
        self.now += h
        for c in self.chargers.values():
            c.update(self.now)
        self.settle()

    def refresh(self) -> None:
        """Recompute draws and readings at the present time (after a command or event)."""
        for c in self.chargers.values():
            c.update(self.now)
        self.settle()

    # -- readings ----------------------------------------------------------------------
    def phase_currents(self, chargers: Iterable[str] | None = None, *, base: bool = True) -> dict[str, float]:
        """Current per site phase: base load (optional) plus the named chargers (all: None)."""
        out = dict(self.grid.base) if base else dict.fromkeys(PHASES, 0.0)
        names = self.chargers if chargers is None else chargers
        for name in names:
            for p, a in self.chargers[name].site_currents().items():
                out[p] += a
        return out

    def voltages(self) -> dict[str, float]:
        return self.grid.voltages(self.phase_currents())

    def settle(self) -> None:
        """Voltages for the present draws, then charger power and meter readings."""
        v = self.voltages()
        for c in self.chargers.values():
            c.set_voltages(v)
        for m in self.meters.values():
            i = self.phase_currents(m.chargers, base=m.whole_site)
            power = tuple(v[p] * i[p] for p in PHASES)
            m.reading = MeterReading(
                voltage=tuple(v[p] for p in PHASES),  # type: ignore[arg-type]
                current=tuple(abs(i[p]) for p in PHASES),  # type: ignore[arg-type]
                power=power,  # type: ignore[arg-type]
                power_total=sum(power),
                energy_import_wh=m.energy_import_wh,
                energy_export_wh=m.energy_export_wh,
                frequency=self.grid.frequency,
            )

    def meter_reading(self, name: str) -> MeterReading:
        reading = self.meters[name].reading
        assert reading is not None
        return reading
