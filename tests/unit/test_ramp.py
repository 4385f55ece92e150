"""SoftRamp: moves at its rates, never overshoots, reports its direction."""

import pytest

from slowctl.device.ramp import SoftRamp
from slowctl.drivers.readings import ChannelState


def test_ramp_up_at_rate():
    r = SoftRamp(programmed=0.0, target=0.0, up=10.0, down=20.0)
    r.start(25.0, now=100.0)
    assert r.active and r.state is ChannelState.RAMP_UP
    assert r.step(100.5) == pytest.approx(5.0)
    assert r.step(101.5) == pytest.approx(15.0)
    assert r.active and r.state is ChannelState.RAMP_UP
    assert r.step(102.0) == pytest.approx(20.0)


def test_ramp_up_stops_exactly_at_target():
    r = SoftRamp(programmed=0.0, target=0.0, up=10.0, down=20.0)
    r.start(25.0, now=0.0)
    values = [r.step(t / 10) for t in range(1, 40)]
    assert max(values) == 25.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert all(v <= 25.0 for v in values)
    assert r.programmed == 25.0 and not r.active


def test_ramp_down_at_its_own_rate():
    r = SoftRamp(programmed=100.0, target=100.0, up=10.0, down=40.0)
    r.start(30.0, now=5.0)
    assert r.state is ChannelState.RAMP_DOWN and r.active
    assert r.step(6.0) == pytest.approx(60.0)
    assert r.state is ChannelState.RAMP_DOWN
    assert r.step(6.5) == pytest.approx(40.0)
    assert r.step(7.0) == 30.0  # would be 20 at the rate: clamped at the target
    assert not r.active


def test_one_big_step_never_overshoots():
    up = SoftRamp(programmed=0.0, target=0.0, up=1000.0, down=1000.0)
    up.start(12.0, now=0.0)
    assert up.step(60.0) == 12.0 and not up.active
    down = SoftRamp(programmed=12.0, target=12.0, up=1000.0, down=1000.0)
    down.start(0.0, now=0.0)
    assert down.step(60.0) == 0.0 and not down.active


def test_time_going_backwards_does_not_move():
    r = SoftRamp(programmed=0.0, target=0.0, up=10.0, down=10.0)
    r.start(50.0, now=10.0)
    assert r.step(9.0) == 0.0
    assert r.step(9.5) == pytest.approx(5.0)  # measured from the last step, not from the start


def test_retarget_mid_ramp_reverses():
    r = SoftRamp(programmed=0.0, target=0.0, up=10.0, down=5.0)
    r.start(100.0, now=0.0)
    assert r.step(2.0) == pytest.approx(20.0)
    r.start(0.0, now=2.0)
    assert r.state is ChannelState.RAMP_DOWN
    assert r.step(3.0) == pytest.approx(15.0)


def test_inactive_at_target():
    r = SoftRamp(programmed=7.0, target=7.0, up=1.0, down=1.0)
    assert not r.active
    assert r.step(100.0) == 7.0 and not r.active


def test_switch_off_at_end_is_kept():
    r = SoftRamp(programmed=5.0, target=5.0, up=1.0, down=1.0, switch_off_at_end=True)
    r.start(0.0, now=0.0)
    r.step(10.0)
    assert r.switch_off_at_end and r.programmed == 0.0 and not r.active
