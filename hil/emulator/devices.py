"""Glue between the physical model and the register images of a site's devices.

Each charger and meter of a site config gets a ``RegisterImage`` from its profile and a
place in one ``SiteModel``. After every model step the model's values are written into
the images (``publish``); every write a client makes (setpoint, enable, phases, failsafe
current and timeout, keep-alive, init) goes into the model at once, so the next read
already shows its effect and the charger's watchdog counts from it.

Choices that make the emulation behave like the hardware the profiles describe:

- A charger whose profile can write ``failsafe_timeout``, or that needs a keep-alive,
  has a watchdog. Settings the controller writes (Heidelberg, Vestel) start unset
  (failsafe current 0, no timeout until written); settings it cannot write (Alfen's
  safe current and validity time) are the installer's, taken from the site config.
- Registers a profile both reads and writes (Heidelberg 261, Vestel 5004, CHARX 300)
  read back what the client wrote; the model only fills them once, at start.
- A grid meter measures the base load and every charger; a sub-meter measures the
  chargers whose ``meter`` names it, or, when none does, the whole site (a check meter).
- Devices on ``skip_buses`` (real hardware on the bench) are not emulated at all; the
  emulated meters know nothing of what real chargers draw.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Collection

from agent.clock import Clock
from agent.config.model import DeviceSection, SiteConfig
from drivers.profile import Profile, load_profile
from hil.emulator.image import RegisterImage
from hil.model import PHASES, ChargerModel, GridModel, MeterModel, SiteModel

log = logging.getLogger(__name__)

#: ambient temperature of an emulated charger, and how much each amp warms it (C)
AMBIENT_C, WARMING_C_PER_A = 25.0, 0.5


class _Emulated:
    """What chargers and meters share: the image, shared registers, safe publishing."""

    def __init__(self, cfg: DeviceSection, profile: Profile) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self.profile = profile
        self.image = RegisterImage(profile, unit_id=cfg.unit_id, connector_index=cfg.connector_index)
        self.shared = _shared_quantities(self.image)
        self._warned: set[str] = set()

    def _set(self, quantity: str, value: Any, *, initial: bool = False) -> None:
        if quantity in self.shared and not initial:
            return
        try:
            self.image.set(quantity, value)
        except (ValueError, KeyError) as exc:
            if quantity not in self._warned:          # once, not every tick
                self._warned.add(quantity)
                log.warning("%s: cannot show %s = %r in its registers: %s", self.id, quantity, value, exc)


class EmulatedCharger(_Emulated):
    def __init__(self, cfg: DeviceSection, profile: Profile, model: ChargerModel, clock: Clock,
                 changed: Callable[[], None]) -> None:
        super().__init__(cfg, profile)
        self.model = model
        self.clock = clock
        self._changed = changed
        self.image.on_write(self._on_write)
        self.publish(initial=True)

    def publish(self, *, initial: bool = False) -> None:
        m = self.model
        self._set("state", m.state)
        for i in range(3):
            n = i + 1
            self._set(f"current_l{n}", m.currents[i])
            self._set(f"voltage_l{n}", m.voltages[i])
            self._set(f"power_l{n}", m.voltages[i] * m.currents[i])
        self._set("power", m.power)
        self._set("energy_import", m.energy_wh)
        self._set("session_energy", m.session_wh)
        self._set("applied_current", m.offered(), initial=initial)
        self._set("failsafe_current", m.failsafe_current, initial=initial)
        self._set("enabled", m.enabled, initial=initial)
        self._set("phases", m.phases, initial=initial)
        self._set("rfid", m.ev.rfid if m.ev is not None else "")
        self._set("fault", 0)
        self._set("temperature", AMBIENT_C + WARMING_C_PER_A * max(m.currents))

    def reboot(self) -> None:
        """A power cycle between two polls: the model forgets what the controller wrote,
        and registers that read back a write show the power-on values again."""
        self.model.reboot(self.clock.monotonic())
        self.publish(initial=True)
        self._changed()

    def _on_write(self, quantity: str, value: Any) -> None:
        now = self.clock.monotonic()
        m = self.model
        try:
            if quantity == "current":
                m.command(now, current=float(value))
            elif quantity == "enable":
                m.command(now, enabled=bool(value))
            elif quantity == "phases":
                m.command(now, phases=int(value))
            elif quantity == "failsafe_current":
                m.command(now, failsafe_current=float(value))
            elif quantity == "failsafe_timeout":
                m.command(now, failsafe_timeout=float(value))
            else:                                  # keepalive, init, unlock: a sign of life
                m.contact(now)
        except ValueError as exc:
            log.warning("%s: write of %s = %r ignored by the model: %s", self.id, quantity, value, exc)
            m.contact(now)
        self._changed()


class EmulatedMeter(_Emulated):
    def __init__(self, cfg: DeviceSection, profile: Profile, model: MeterModel, site: SiteModel) -> None:
        super().__init__(cfg, profile)
        self.model = model
        self.site = site
        self.publish(initial=True)

    def publish(self, *, initial: bool = False) -> None:
        r = self.site.meter_reading(self.model.name)
        for i in range(3):
            n = i + 1
            self._set(f"voltage_l{n}", r.voltage[i])
            self._set(f"current_l{n}", r.current[i])
            self._set(f"power_l{n}", r.power[i])
        self._set("power", r.power_total)
        self._set("energy_import", r.energy_import_wh)
        self._set("energy_export", r.energy_export_wh)
        self._set("frequency", r.frequency)


class EmulatedSite:
    """Every device of a site config, emulated on one model and one clock."""

    def __init__(self, config: SiteConfig, clock: Clock, *, base_load: dict[str, float] | None = None,
                 skip_buses: Collection[str] = ()) -> None:
        self.config = config
        self.clock = clock
        self.model = SiteModel(GridModel(), now=clock.monotonic())
        if base_load:
            self.model.grid.set_base(base_load)
        self.chargers: dict[str, EmulatedCharger] = {}
        self.meters: dict[str, EmulatedMeter] = {}
        emulated = [d for d in config.devices if d.bus not in skip_buses]
        chargers = [d for d in emulated if d.role == "charger"]
        for cfg in chargers:
            profile = load_profile(cfg.profile)
            model = self.model.add_charger(charger_model(cfg, profile, now=self.model.now))
            self.chargers[cfg.id] = EmulatedCharger(cfg, profile, model, clock, self.publish)
        for cfg in emulated:
            if cfg.role == "charger":
                continue
            behind = [c.id for c in chargers if c.meter == cfg.id]
            whole_site = cfg.role == "grid_meter" or not behind
            meter = self.model.add_meter(cfg.id, None if whole_site else behind)
            self.meters[cfg.id] = EmulatedMeter(cfg, load_profile(cfg.profile), meter, self.model)

    @property
    def devices(self) -> dict[str, EmulatedCharger | EmulatedMeter]:
        return {**self.chargers, **self.meters}

    def images_on(self, bus_id: str) -> list[RegisterImage]:
        return [d.image for d in self.devices.values() if d.cfg.bus == bus_id]

    def image(self, device_id: str) -> RegisterImage:
        try:
            return self.devices[device_id].image
        except KeyError:
            raise KeyError(f"no emulated device {device_id!r}") from None

    def advance(self) -> None:
        """Bring the model up to the clock and show it in every image."""
        self.model.advance_to(self.clock.monotonic())
        self.publish()

    def publish(self) -> None:
        self.model.settle()
        for d in self.devices.values():
            d.publish()


def charger_model(cfg: DeviceSection, profile: Profile, *, now: float = 0.0) -> ChargerModel:
    """The physical charger behind a config entry (see the module doc for the watchdog)."""
    writes = profile.writes
    watchdog = "failsafe_timeout" in writes or profile.keepalive is not None
    wiring = list(cfg.wiring)[: cfg.phases] if cfg.wiring else list(PHASES[: cfg.phases])
    return ChargerModel(
        cfg.id,
        phases=cfg.phases,
        wiring=wiring,
        min_current=profile.min_current,
        max_current=min(profile.max_current, cfg.max_current),
        failsafe_current=0.0 if "failsafe_current" in writes else cfg.failsafe_current,
        failsafe_timeout=None if "failsafe_timeout" in writes or not watchdog else cfg.failsafe_timeout,
        watchdog=watchdog,
        now=now,
    )


def _shared_quantities(image: RegisterImage) -> set[str]:
    """Read quantities whose registers the client also writes (they read back the write)."""
    p = image.profile
    out = set()
    for q, r in p.reads.items():
        ra = image.address_of(r)
        for w in p.writes.values():
            table = "coil" if w.register == "coil" else w.register
            wa = image.address_of(w)
            if r.register == table and ra < wa + w.words and wa < ra + r.words:
                out.add(q)
    return out
