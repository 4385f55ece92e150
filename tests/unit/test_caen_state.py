"""CAEN N1470 STAT word -> channel state and alarm list."""

import pytest

from slowctl.drivers.caen_n1470 import STAT_BITS, channel_state
from slowctl.drivers.readings import ChannelState

BIT = {name: 1 << i for i, name in enumerate(STAT_BITS)}


def word(*names: str) -> int:
    return sum(BIT[n] for n in names)


def test_bit_positions_match_the_manual():
    assert [
        BIT[n]
        for n in ("ON", "RUP", "RDW", "OVC", "OVV", "UNV", "MAXV", "TRIP", "OVP", "OVT", "DIS", "KILL", "ILK", "NOCAL")
    ] == [1 << i for i in range(14)]


@pytest.mark.parametrize(
    "stat,state,alarms",
    [
        (0, ChannelState.OFF, []),
        (word("ON"), ChannelState.ON, []),
        (word("ON", "RUP"), ChannelState.RAMP_UP, []),
        (word("ON", "RDW"), ChannelState.RAMP_DOWN, []),
        (word("RDW"), ChannelState.RAMP_DOWN, []),
        (word("TRIP"), ChannelState.TRIPPED, ["TRIP"]),
        (word("ON", "RUP", "TRIP"), ChannelState.TRIPPED, ["TRIP"]),
        (word("TRIP", "ILK"), ChannelState.TRIPPED, ["TRIP", "ILK"]),
        (word("TRIP", "OVT", "KILL"), ChannelState.TRIPPED, ["TRIP", "OVT", "KILL"]),
        (word("ON", "OVC"), ChannelState.COMPLIANCE, ["OVC"]),  # current-limited
        (word("ON", "OVV", "MAXV"), ChannelState.ON, ["OVV", "MAXV"]),
        (word("UNV"), ChannelState.OFF, ["UNV"]),
        (word("NOCAL"), ChannelState.OFF, ["NOCAL"]),
        (word("ON", "RUP", "OVC"), ChannelState.COMPLIANCE, ["OVC"]),  # limiting wins over ramping
        (word("OVC"), ChannelState.OFF, ["OVC"]),  # off: nothing to limit
    ],
)
def test_states(stat, state, alarms):
    assert channel_state(stat) == (state, alarms)


@pytest.mark.parametrize("fault", ["OVP", "OVT", "DIS", "KILL", "ILK"])
@pytest.mark.parametrize("others", [(), ("ON",), ("ON", "RUP"), ("RDW",)])
def test_fault_bits_are_error(fault, others):
    state, alarms = channel_state(word(fault, *others))
    assert state is ChannelState.ERROR
    assert fault in alarms
    assert not {"ON", "RUP", "RDW"} & set(alarms)


def test_every_combination_is_consistent():
    for stat in range(1 << len(STAT_BITS)):
        state, alarms = channel_state(stat)
        if stat & BIT["TRIP"]:
            assert state is ChannelState.TRIPPED
        assert alarms == [n for n in STAT_BITS if stat & BIT[n] and n not in ("ON", "RUP", "RDW")]


def test_unknown_high_bits_are_ignored():
    assert channel_state(word("ON") | 1 << 20) == (ChannelState.ON, [])
