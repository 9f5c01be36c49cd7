"""Which registers to read in one request.

A poll that asks for each value separately pays the RS-485 turnaround and the device's
inter-request gap for every one of them (about 100 ms each on an SDM630); merging
neighbouring entries of one register type into a block read turns 13 requests into 2.
Devices limit a read's length (``max_read``), and some refuse reads spanning registers
they do not define, hence ``gap``: how many unused registers a block may span.
The emulator uses the same planning to decide which addresses exist, so a block the
driver plans is always one the emulator answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

#: Modbus maxima per read request
MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True)
class Item:
    """One thing to read: ``key`` names it for the caller."""

    key: str
    table: str       # holding | input | coil | discrete
    address: int     # absolute (after connector stride / SunSpec base)
    count: int       # registers, or bits


@dataclass(frozen=True)
class Block:
    table: str
    start: int
    count: int
    items: tuple[Item, ...]

    @property
    def end(self) -> int:
        return self.start + self.count


def plan(items: Iterable[Item], max_read: int, gap: int, last: Iterable[str] = ()) -> list[Block]:
    """Group ``items`` into as few reads as ``max_read`` and ``gap`` allow.

    Per table, items sorted by address are merged greedily while the block stays within
    ``max_read`` and the hole before the next item is at most ``gap``. An item larger
    than ``max_read`` is a profile error caught at load, so it is not handled here.

    Blocks holding a key in ``last`` are read after all others. The drivers put the
    energy registers there: a poll that reads the energy first and the charger's state
    a moment later can see an EV that left in between, and end its transaction with
    the energy from before it left (the long kill soak caught a meterStop 8 Wh below
    the register at 10x physics speed). Read after the state, the energy is never older
    than what the state says.
    """
    by_table: dict[str, list[Item]] = {}
    for it in items:
        by_table.setdefault(it.table, []).append(it)
    blocks: list[Block] = []
    for table in sorted(by_table):
        limit = MAX_BITS if table in ("coil", "discrete") else min(max_read, MAX_REGISTERS)
        hole = gap * 16 if table in ("coil", "discrete") else gap
        cur: list[Item] = []
        start = end = 0
        for it in sorted(by_table[table], key=lambda i: (i.address, i.count)):
            it_end = it.address + it.count
            if cur and it.address - end <= hole and max(end, it_end) - start <= limit:
                cur.append(it)
                end = max(end, it_end)
                continue
            if cur:
                blocks.append(Block(table, start, end - start, tuple(cur)))
            cur, start, end = [it], it.address, it_end
        if cur:
            blocks.append(Block(table, start, end - start, tuple(cur)))
    late = set(last)
    return sorted(blocks, key=lambda b: any(it.key in late for it in b.items))   # stable: table order kept
