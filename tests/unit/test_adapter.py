"""The MQTT adapter around the core: refusals that must never reach the instrument, one reply per command."""

import time
from unittest import mock

import pytest

from slowctl.device.adapter import DeviceService
from slowctl.device.commands import Command, Request
from slowctl.device.contract import DeviceState
from slowctl.drivers.caen_n1470 import CaenN1470
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.mqtt import Endpoint


@pytest.fixture
def service(stack_config):
    svc = DeviceService("hv", stack_config, Endpoint("127.0.0.1", 1))
    svc.replies = []
    svc._reply = lambda req, ok, error=None, applied=None, before=None: svc.replies.append((req, ok, error))
    svc.mqtt = mock.MagicMock()  # nothing reaches a broker
    return svc


@pytest.fixture
def driver():
    d = mock.MagicMock(spec=CaenN1470)
    d.link = mock.MagicMock()
    d.read.return_value = {0: reading(on=True, state=ChannelState.ON, vset=100.0)}
    return d


def follows_vset(d, channel=0, **kw):
    """The mocked instrument holds what it was last sent (a read returns a fresh object each time)."""
    held = {"vset": kw.pop("vset", 0.0)}

    def set_voltage(ch, v):
        held["vset"] = v

    d.set_voltage.side_effect = set_voltage
    d.read.side_effect = lambda channels, full: {channel: reading(vset=held["vset"], **kw)}


def reading(**kw) -> SupplyChannel:
    base = dict(on=False, vset=0.0, vmon=0.0, iset=1e-5, imon=0.0, state=ChannelState.OFF, rampup=20, rampdown=40)
    base.update(kw)
    return SupplyChannel(**base)


def command(action="vset", channel=0, value=100.0, **req) -> Command:
    return Command(action, channel, value, Request(action=action, channel=channel, value=value, **req))


def test_fresh_command_is_executed(service, driver):
    service._driver = driver
    service._execute(command("vset", 0, 100.0))
    assert [(ok, err) for _, ok, err in service.replies] == [(True, None)]
    driver.set_voltage.assert_called_once_with(0, 100.0)
    # the channel is read before the command (to decide on fresh state) and read back after it
    assert driver.read.call_args_list == [mock.call([0], full=False), mock.call([0], full=True)]
    driver.link.lock.exclusive.assert_called_once()


def test_command_older_than_max_command_age_is_refused(service, driver):
    service._driver = driver
    assert service.cfg.max_command_age == 10
    cmd = command(received=time.monotonic() - 11)
    service._execute(cmd)
    assert len(service.replies) == 1
    req, ok, error = service.replies[0]
    assert req is cmd.request and ok is False and "stale" in error
    assert driver.mock_calls == []  # neither the driver nor its link was touched


def test_command_past_its_mqtt_expiry_is_refused(service, driver):
    service._driver = driver
    now = time.monotonic()
    cmd = command(received=now - 1.0, expires=now - 0.5)  # well within max_command_age, but expired
    service._execute(cmd)
    ((_, ok, error),) = service.replies
    assert ok is False and "stale" in error
    assert driver.mock_calls == []  # neither the driver nor its link was touched


def test_command_within_its_expiry_runs(service, driver):
    service._driver = driver
    now = time.monotonic()
    service._execute(command(received=now, expires=now + 5))
    ((_, ok, error),) = service.replies
    assert ok is True and error is None
    driver.set_voltage.assert_called_once()


@pytest.mark.parametrize(
    "action,value", [("on", None), ("off", None), ("clear", None), ("iset", 1e-5), ("rampup", 10.0)]
)
def test_stale_refusal_for_every_action(service, driver, action, value):
    service._driver = driver
    service._execute(command(action, 1, value, received=time.monotonic() - 60))
    ((_, ok, error),) = service.replies
    assert ok is False and "stale" in error
    assert driver.mock_calls == []  # neither the driver nor its link was touched


def test_command_while_disconnected_is_refused(service):
    assert service._driver is None
    service.error = "cannot connect to /dev/ttyUSB0: no such file"
    service._execute(command("on", 0, None))
    ((_, ok, error),) = service.replies
    assert ok is False and "not connected" in error and "no such file" in error


def test_on_while_tripped_is_refused(service, driver):
    service._driver = driver
    service.core.readings[2] = reading(state=ChannelState.OFF)  # the last poll did not see the trip yet
    driver.read.return_value = {2: reading(state=ChannelState.TRIPPED, alarms=["TRIP"])}
    service._execute(command("on", 2, None))
    ((_, ok, error),) = service.replies
    assert ok is False and "clear first" in error and "channel 2" in error
    driver.switch.assert_not_called()


def test_clear_while_tripped_is_executed(service, driver):
    service._driver = driver
    service.core.readings[2] = reading(state=ChannelState.TRIPPED, alarms=["TRIP"])
    driver.read.side_effect = [{2: reading(state=ChannelState.TRIPPED, alarms=["TRIP"])}, {2: reading()}]
    service._execute(command("clear", 2, None))
    ((_, ok, error),) = service.replies
    assert ok is True
    driver.clear.assert_called_once_with(2)
    assert service.core.readings[2].state is ChannelState.OFF


def test_on_for_an_untripped_channel_is_executed(service, driver):
    service._driver = driver
    service.core.readings[2] = reading(state=ChannelState.OFF)
    driver.read.side_effect = [{2: reading()}, {2: reading(on=True, state=ChannelState.RAMP_UP)}]
    service._execute(command("on", 2, None))
    assert service.replies[0][1] is True
    driver.switch.assert_called_once_with(2, True)


def test_instrument_refusal_is_reported(service, driver):
    from slowctl.drivers.link import InstrumentError

    service._driver = driver
    driver.set_voltage.side_effect = InstrumentError("VSET: value out of range (VAL:ERR)")
    service._execute(command("vset", 0, 100.0))
    ((_, ok, error),) = service.replies
    assert ok is False and "instrument refused" in error and "VAL:ERR" in error


def test_link_failure_disconnects(service, driver):
    from slowctl.drivers.link import LinkError

    service._driver = driver
    driver.set_voltage.side_effect = LinkError("timeout waiting for a reply")
    service._execute(command("vset", 0, 100.0))
    ((_, ok, error),) = service.replies
    assert ok is False and "link failed" in error
    assert service._driver is None and service.state is DeviceState.DISCONNECTED
    driver.link.close.assert_called_once()


def test_accept_refuses_while_disconnected_without_queueing(service):
    service.error = "not connected yet"
    service._accept(Request(action="vset", channel=0, value=10.0))
    ((_, ok, error),) = service.replies
    assert ok is False and "not connected" in error
    assert service.queue.empty()


def test_accept_queues_a_valid_command(service, driver):
    service._driver = driver
    service._accept(Request(action="vset", channel=0, value=10.0))
    assert service.replies == []
    cmd = service.queue.get_nowait()
    assert (cmd.action, cmd.channel, cmd.value) == ("vset", 0, 10.0)


def test_unexpected_driver_exception_still_gets_one_reply_and_the_worker_lives(service, driver):
    service._driver = driver
    follows_vset(driver)
    calls = []

    def set_voltage(ch, v):
        calls.append(v)
        if len(calls) == 1:
            raise RuntimeError("bug")

    driver.set_voltage.side_effect = set_voltage
    driver.read.side_effect = lambda channels, full: {0: reading(vset=calls[-1] if calls else 0.0)}
    service.queue.put(command("vset", 0, 100.0))
    service.queue.put(command("vset", 0, 50.0))
    worker = __import__("threading").Thread(target=service._command_loop, daemon=True)
    worker.start()
    deadline = time.monotonic() + 5
    while len(service.replies) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    service.stop_event.set()
    worker.join(2)
    assert [(ok, "internal error" in (err or "")) for _, ok, err in service.replies] == [(False, True), (True, False)]


def test_ts_age_is_checked_again_when_the_command_runs(service, driver):
    service._driver = driver
    cmd = command("vset", 0, 10.0, issued=time.time() - 11)  # was fresh when accepted, waited too long
    service._execute(cmd)
    ((_, ok, error),) = service.replies
    assert ok is False and "issued 11" in error
    driver.set_voltage.assert_not_called()


def test_commands_arriving_during_shutdown_are_refused(service, driver):
    service._driver = driver
    service.mqtt.connected.is_set.return_value = False
    service._shutdown()
    service._accept(Request(action="vset", channel=0, value=10.0))
    ((_, ok, error),) = service.replies
    assert ok is False and "shutting down" in error
    assert service.queue.empty()


def test_error_state_does_not_republish_old_readings(service, driver):
    service.mqtt.connected.is_set.return_value = True
    service.core.readings[0] = reading(on=True, state=ChannelState.ON, vset=100.0)
    service.state = DeviceState.ERROR
    service._publish_status()
    status = [c for c in service.mqtt.publish.call_args_list if c.args[0].endswith("/status")][-1]
    import json

    channels = json.loads(status.args[1])["channels"]
    assert "vmon" not in channels[0] and channels[0]["name"] == "sensor-A"
    assert not [c for c in service.mqtt.publish.call_args_list if c.args[0].endswith("/metrics")]


def test_software_off_ramp_is_cancelled_by_on(stack_config):
    """LV channel 0 ramps in software: 'off' ramps down; an 'on' meanwhile ramps back up and stays on."""
    from slowctl.drivers.hmp4040 import Hmp4040

    svc = DeviceService("lv", stack_config, Endpoint("127.0.0.1", 1))
    svc.replies = []
    svc._reply = lambda req, ok, error=None, applied=None, before=None: svc.replies.append((ok, error))
    svc.mqtt = mock.MagicMock()
    d = mock.MagicMock(spec=Hmp4040)
    d.link = mock.MagicMock()
    on = {0: SupplyChannel(on=True, vset=2.0, vmon=2.0, iset=1.0, imon=0.1, state=ChannelState.ON)}
    d.read.return_value = on
    svc._driver = d
    svc.core.targets[0] = 2.0
    svc._execute(command("off", 0, None))
    assert svc.core.ramps[0].switch_off_at_end and svc.core.ramps[0].target == 0.0
    svc._execute(command("on", 0, None))
    assert not svc.core.ramps[0].switch_off_at_end and svc.core.ramps[0].target == 2.0
    d.switch.assert_not_called()  # never switched off, never re-switched on


def test_set_values_beyond_the_configured_limits_raise_alarms(service):
    """hv channel 0 allows vmax 600 V, imax 100 µA; the instrument may hold more (front panel)."""
    service.core.observe({0: reading(vset=700.0, iset=1e-3), 1: reading(vset=600.0, iset=1e-4)}, time.monotonic())
    assert service.core.readings[0].alarms == ["VSET_ABOVE_VMAX", "ISET_ABOVE_IMAX"]
    assert service.core.readings[1].alarms == []  # at the limit is fine


def test_sensor_readings_pass_through_update(stack_config):
    from slowctl.drivers.readings import SensorChannel

    svc = DeviceService("climate", stack_config, Endpoint("127.0.0.1", 1))
    svc.core.observe({0: SensorChannel(temperature=20.0, humidity=40.0, dewpoint=6.0)}, time.monotonic())
    assert svc.core.readings[0].humidity == 40.0


def test_a_trip_stays_until_clear_even_if_the_instrument_forgets_it(service, driver):
    """E.g. a TTi whose limit register clears when read, or a reconnect: the service keeps the trip."""
    service._driver = driver
    service.core.observe({1: reading(state=ChannelState.TRIPPED, alarms=["OCP"])}, time.monotonic())
    service.core.observe({1: reading(state=ChannelState.OFF)}, time.monotonic())
    assert service.core.readings[1].state is ChannelState.TRIPPED and "TRIP_LATCHED" in service.core.readings[1].alarms
    driver.read.side_effect = lambda channels, full: {1: reading(state=ChannelState.OFF)}  # fresh objects
    service._execute(command("on", 1, None))
    assert service.replies[-1][1:] == (False, "channel 1 is tripped: send clear first")
    driver.switch.assert_not_called()
    service._execute(command("clear", 1, None))
    assert service.replies[-1][1] is True
    service.core.observe({1: reading(state=ChannelState.OFF)}, time.monotonic())
    assert service.core.readings[1].state is ChannelState.OFF
