import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.uplink.backoff import Backoff


def test_ceiling_doubles_then_caps():
    b = Backoff(initial=1.0, maximum=10.0)
    assert [b.ceiling(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.ceiling(10**9) == 10.0  # no overflow after a very long outage


def test_seeded_sequence_is_reproducible_and_jittered():
    a = Backoff(initial=1.0, maximum=60.0, rng=random.Random(42))
    b = Backoff(initial=1.0, maximum=60.0, rng=random.Random(42))
    seq_a = [a.next_delay() for _ in range(12)]
    seq_b = [b.next_delay() for _ in range(12)]
    assert seq_a == seq_b
    # full jitter: the draws are not simply the ceilings
    assert any(d < Backoff(initial=1.0, maximum=60.0).ceiling(i) * 0.9 for i, d in enumerate(seq_a))


@given(
    initial=st.floats(0.01, 10),
    factor=st.floats(1, 100),
    minimum_frac=st.floats(0, 1),
    seed=st.integers(0, 2**32),
    attempts=st.integers(1, 80),
)
def test_every_delay_within_bounds(initial, factor, minimum_frac, seed, attempts):
    b = Backoff(initial=initial, maximum=initial * factor, minimum=initial * minimum_frac, rng=random.Random(seed))
    for i in range(attempts):
        d = b.next_delay()
        assert b.minimum <= d <= b.ceiling(i) <= b.maximum


def test_average_grows_until_the_cap():
    rng = random.Random(7)
    means = []
    for attempt in range(7):
        total = 0.0
        for _ in range(400):
            b = Backoff(initial=1.0, maximum=16.0, rng=rng)
            b.attempt = attempt
            total += b.next_delay()
        means.append(total / 400)
    # expected mean is ceiling/2: 0.5, 1, 2, 4, 8, 8, 8
    for got, want in zip(means, [0.5, 1, 2, 4, 8, 8, 8]):
        assert want * 0.85 < got < want * 1.15


def test_reset_starts_over():
    b = Backoff(initial=2.0, maximum=100.0, rng=random.Random(1))
    for _ in range(5):
        b.next_delay()
    assert b.attempt == 5
    b.reset()
    assert b.attempt == 0
    assert b.next_delay() <= 2.0


def test_minimum_floor_is_respected():
    b = Backoff(initial=4.0, maximum=8.0, minimum=3.0, rng=random.Random(3))
    assert all(3.0 <= b.next_delay() <= 8.0 for _ in range(50))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"initial": 0}, "initial"),
        ({"initial": 5, "maximum": 1}, "maximum"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"initial": 1, "minimum": 2}, "minimum"),
    ],
)
def test_bad_parameters_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Backoff(**kwargs)
