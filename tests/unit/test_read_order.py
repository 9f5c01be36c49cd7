"""A poll reads the energy registers after the charger's state (drivers/modbus/blocks.py).

Read first, the energy can be older than a state read a moment later that already shows
the EV gone, and its transaction would end below the register at unplug (the long kill
soak caught 950 Wh against 958 Wh).
"""

import pytest

from drivers.modbus.blocks import Item, plan
from drivers.modbus.device import ENERGY_KEYS
from drivers.profile import load_profile, profile_names

STATE_KEYS = ("state", "plug", "charging")


def test_blocks_with_a_last_key_come_after_the_others_in_table_order():
    items = [Item("energy_import", "holding", 904, 2), Item("enabled", "coil", 400, 1),
             Item("state", "input", 100, 1), Item("current_l1", "input", 114, 2)]
    blocks = plan(items, 125, 16, last=ENERGY_KEYS)
    assert [b.table for b in blocks] == ["coil", "input", "holding"]
    assert [b.table for b in plan(items, 125, 16)] == ["coil", "holding", "input"]   # no last: by table


CHARGERS_WITH_ENERGY = [n for n in profile_names()
                        if (p := load_profile(n)).kind == "charger" and any(k in p.reads for k in ENERGY_KEYS)]


def test_there_are_chargers_to_check():
    assert len(CHARGERS_WITH_ENERGY) >= 4, CHARGERS_WITH_ENERGY


@pytest.mark.parametrize("name", CHARGERS_WITH_ENERGY)
def test_every_shipped_charger_reads_its_energy_after_its_state(name):
    profile = load_profile(name)
    items = [Item(q, s.register, s.address, s.words) for q, s in profile.reads.items()]
    blocks = plan(items, profile.max_read, profile.read_gap, last=ENERGY_KEYS)
    where = {it.key: i for i, b in enumerate(blocks) for it in b.items}
    energy = min(where[k] for k in ENERGY_KEYS if k in where)
    state = max(where[k] for k in STATE_KEYS if k in where)
    assert state <= energy, f"{name}: energy read in block {energy}, state in block {state}"
