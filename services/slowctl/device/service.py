"""The device service: one instrument, one process, MQTT on one side, a driver on the other.

Threads: the poller (main thread) reads the instrument every poll period; the
command worker executes validated commands and software-ramp steps; paho's
network thread receives commands and validates them before they are queued.
A command takes the instrument link before the poller's next round trip.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import paho.mqtt.client as paho

from slowctl.device.commands import (Command, CommandError, Request, Rules, check_size, parse_json, parse_legacy,
                              parse_plain, validate)
from slowctl.config import DeviceConfig, StackConfig
from slowctl.device.contract import DeviceState, LegacyTopics, Topics
from slowctl.drivers.readings import ChannelState, ChillerChannel, Reading, SupplyChannel
from slowctl.drivers import DRIVERS, Driver, SupplyDriver, supply_kind
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings, open_link
from slowctl.device.heartbeat import Heartbeat
from slowctl.mqtt import Endpoint, MqttSession, publish_properties
from slowctl.device.payloads import channel_dict, legacy_status, metrics_lines
from slowctl.device.ramp import SoftRamp

log = logging.getLogger(__name__)

RAMP_TICK = 0.2  # s between software-ramp steps


def link_settings(driver: type[Driver], cfg: DeviceConfig) -> LinkSettings:
    """The driver's defaults for its instrument, overridden by what the device config says."""
    overrides = {k: v for section in (cfg.serial, cfg.link) for k, v in section.model_dump().items() if v is not None}
    return replace(driver.link_settings, timeout=cfg.timeout, visa_library=cfg.visa_library, **overrides)


@dataclass
class Health:
    restarts: int = 0
    poll_cycles: int = 0
    last_poll_duration: float | None = None
    consecutive_errors: int = 0
    errors: int = 0


class DeviceService:
    def __init__(self, device: str, stack: StackConfig, endpoint: Endpoint, restarts: int = 0) -> None:
        self.id = device
        self.cfg = stack.devices[device]
        self.driver_cls = DRIVERS[self.cfg.model]
        self.options = self.driver_cls.parse_options(self.cfg.options)
        self.link_settings = link_settings(self.driver_cls, self.cfg)
        self.topics = Topics(stack.mqtt.topic_root, device)
        self.legacy = LegacyTopics(self.cfg.legacy_name) if self.cfg.legacy_name else None
        self.channels = sorted(self.cfg.channels)
        self.names = {ch: c.name for ch, c in self.cfg.channels.items()}
        self.is_supply = issubclass(self.driver_cls, SupplyDriver)
        self.kind = supply_kind(self.cfg.model, [c.vmax for c in self.cfg.channels.values()])
        hw_ramp = self.is_supply and self.driver_cls.hardware_ramp  # type: ignore[attr-defined]
        # software ramp where the instrument cannot ramp and the channel has a rate
        self.soft = {ch for ch, c in self.cfg.channels.items() if self.is_supply and not hw_ramp and c.rampup}
        self.rates = {ch: (c.rampup, c.rampdown or c.rampup) for ch, c in self.cfg.channels.items()}
        self.rules = Rules(
            actions=self.driver_cls.actions(),
            channels=dict(self.cfg.channels),
            instrument_limits=lambda action: self.driver_cls.instrument_limits(action, self.options),
            max_age=self.cfg.max_command_age,
            ramp_actions_for=lambda ch: ch in self.soft,
        )
        self.mqtt = MqttSession(
            endpoint, f"slowctl-{device}", keepalive=stack.mqtt.keepalive,
            reconnect=(stack.mqtt.reconnect_min, stack.mqtt.reconnect_max),
            will=(self.topics.availability, "offline"), on_connect=self._announce,
        )
        self.health = Health(restarts=restarts)
        self.heartbeat = Heartbeat.from_env()
        self.stop_event = threading.Event()
        self.queue: queue.Queue[Command] = queue.Queue()
        self._driver: Driver | None = None
        self._driver_lock = threading.Lock()
        self._pub_lock = threading.Lock()
        self.readings: dict[int, Reading] = {}
        self._read_at: dict[int, float] = {}
        self.targets: dict[int, float] = {}  # user vset of software-ramped channels
        self.ramps: dict[int, SoftRamp] = {}  # rebound (not mutated) by _link_lost, from any thread
        self.ramp_aborted: set[int] = set()  # channels left between steps by a link loss
        # trips stay visible until `clear` or until the channel is seen on again, even where the
        # instrument forgets them (a register cleared by reading it, a reconnect)
        self.latched_trips: set[int] = set()
        self._accept_lock = threading.Lock()
        self._closing = False
        self.state = DeviceState.DISCONNECTED
        self.error: str | None = "not connected yet"
        self.identity: str | None = None
        self.seq = 0
        self.started = time.monotonic()

    # --- lifecycle --------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.mqtt.subscribe(self.topics.cmd + "/#", self._on_command)
        if self.legacy:
            self.mqtt.subscribe(self.legacy.setv, self._on_legacy)
            self.mqtt.subscribe(self.legacy.switch, self._on_legacy)
        self.mqtt.start()
        worker = threading.Thread(target=self._command_loop, name="commands", daemon=True)
        worker.start()
        try:
            self._poll_loop()
        finally:
            self.stop_event.set()
            worker.join(5)
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        """Announce offline and let go of the instrument; outputs stay exactly as they are."""
        with self._accept_lock:
            self._closing = True  # from now on _accept refuses: every command still gets its reply
        while True:
            try:
                cmd = self.queue.get_nowait()
            except queue.Empty:
                break
            self._reply(cmd.request, False, "service is shutting down; command not executed")
        self.mqtt.stop(last_words=[(self.topics.availability, "offline")])
        driver = self._driver
        if driver is not None:
            driver.link.close()
        log.info("stopped")

    def _announce(self) -> None:
        """Birth: runs on every (re)connect to the broker."""
        self.mqtt.publish(self.topics.availability, "online", qos=1, retain=True)
        self._publish_status()
        self._publish_health()

    # --- instrument link ----------------------------------------------------------
    def _connect(self) -> bool:
        link = None
        try:
            link = open_link(self.cfg.address, self.link_settings)
            driver = self.driver_cls(link, self.options, self.channels)
            identity = driver.connect()
            if isinstance(driver, SupplyDriver):
                for ch in self.channels:  # rates as last commanded, else as configured
                    up, down = self.rates[ch] if ch not in self.soft else (None, None)
                    driver.configure_channel(ch, up, down, self.cfg.channels[ch].off_mode)
        except (LinkError, InstrumentError) as exc:
            if link is not None:
                link.close()
            self.health.consecutive_errors += 1
            self.health.errors += 1
            self._set_state(DeviceState.DISCONNECTED, f"cannot connect to {self.cfg.address}: {exc}")
            return False
        self.identity = identity
        with self._driver_lock:
            self._driver = driver
        log.info("instrument connected: %s", identity)
        return True

    def _link_lost(self, driver: Driver, exc: Exception) -> None:
        with self._driver_lock:
            if self._driver is not driver:
                return
            self._driver = None
        aborted, self.ramps = self.ramps, {}  # a new link must not continue an old ramp
        if aborted:
            self.ramp_aborted |= set(aborted)
            log.warning("software ramp of channel(s) %s aborted: the output stays where the last step left it",
                        sorted(aborted))
        with driver.link.lock.exclusive():  # never close under a transaction of the other thread
            driver.link.close()
        self.health.consecutive_errors += 1
        self.health.errors += 1
        self._set_state(DeviceState.DISCONNECTED, f"instrument link lost: {exc}")

    def _set_state(self, state: DeviceState, error: str | None) -> None:
        changed = (state, error) != (self.state, self.error)
        self.state, self.error = state, error
        if error and changed:
            log.warning("%s: %s", state.value, error)
        self._publish_status()
        self._publish_health()

    # --- polling --------------------------------------------------------------------
    def _poll_loop(self) -> None:
        backoff = 0.5
        next_poll = time.monotonic()
        while not self.stop_event.is_set():
            self.heartbeat.beat(self.mqtt.connected.is_set())
            try:
                backoff, next_poll = self._poll_step(backoff, next_poll)
            except Exception as exc:  # a bug must not end the service: treat it as a lost link
                log.exception("unexpected error in the poll loop")
                driver = self._driver
                if driver is not None:
                    self._link_lost(driver, exc)
                self.stop_event.wait(1.0)

    def _poll_step(self, backoff: float, next_poll: float) -> tuple[float, float]:
        """One turn of the poll loop: (re)connect with backoff, or poll when due."""
        if self._driver is None:
            if not self._connect():
                self.stop_event.wait(backoff)
                return min(backoff * 2, self.cfg.reconnect_max), next_poll
            backoff = 0.5
            next_poll = time.monotonic()
        now = time.monotonic()
        if now < next_poll:
            self.stop_event.wait(min(next_poll - now, 0.5))
            return backoff, next_poll
        self._poll_once()
        next_poll += self.cfg.poll_period
        if next_poll < time.monotonic():  # overran: skip, don't burst
            next_poll = time.monotonic() + self.cfg.poll_period
        return backoff, next_poll

    def _poll_once(self) -> None:
        driver = self._driver
        if driver is None:
            return
        started = time.monotonic()
        full = self.health.poll_cycles % self.cfg.full_read_every == 0
        try:
            readings = driver.read(self.channels, full)
        except LinkError as exc:
            self._link_lost(driver, exc)
            return
        except InstrumentError as exc:
            self.health.consecutive_errors += 1
            self.health.errors += 1
            self._set_state(DeviceState.ERROR, str(exc))
            return
        self.health.poll_cycles += 1
        self.health.last_poll_duration = time.monotonic() - started
        self.health.consecutive_errors = 0
        self._update(readings, started)
        self.state, self.error = DeviceState.OK, None
        self._publish_status()
        self._publish_health()

    def _update(self, readings: dict[int, Reading], started: float) -> None:
        with self._pub_lock:
            for ch, r in readings.items():
                if self._read_at.get(ch, -math.inf) > started:
                    continue  # a command's read-back is newer than this poll
                if ch in self.soft and isinstance(r, SupplyChannel):
                    ramp = self.ramps.get(ch)
                    if ch in self.ramp_aborted:
                        r.alarms.append("RAMP_ABORTED")  # vset shows what the instrument holds
                    else:
                        r.vset = self.targets.setdefault(ch, r.vset)
                    if ramp is not None and r.state is not ChannelState.TRIPPED:
                        r.state = ramp.state
                    r.rampup, r.rampdown = self.rates[ch]
                if isinstance(r, SupplyChannel):
                    self._latch_trip(ch, r)
                if isinstance(r, (SupplyChannel, ChillerChannel)):
                    r.alarms.extend(self._beyond_limits(ch, r))
                self.readings[ch] = r
                self._read_at[ch] = started

    def _latch_trip(self, ch: int, r: SupplyChannel) -> None:
        if r.state is ChannelState.TRIPPED:
            self.latched_trips.add(ch)
        elif ch in self.latched_trips:
            if r.on:
                self.latched_trips.discard(ch)  # running again (switched on at the front panel)
            else:
                r.state = ChannelState.TRIPPED
                r.alarms.append("TRIP_LATCHED")

    def _beyond_limits(self, ch: int, r: SupplyChannel | ChillerChannel) -> list[str]:
        """Set values beyond the configured limits (front panel, another program): say so loudly."""
        c = self.cfg.channels[ch]
        over = lambda value, limit: limit is not None and value > limit * (1 + 1e-6) + 1e-12  # noqa: E731
        alarms = []
        if isinstance(r, SupplyChannel):
            alarms += ["VSET_ABOVE_VMAX"] if over(r.vset, c.vmax) else []
            alarms += ["ISET_ABOVE_IMAX"] if over(r.iset, c.imax) else []
        elif isinstance(r, ChillerChannel) and c.tmin is not None and c.tmax is not None:
            alarms += ["TSET_OUTSIDE_LIMITS"] if not c.tmin <= r.tset <= c.tmax else []
        return alarms

    # --- commands -------------------------------------------------------------------------
    def _on_command(self, msg: paho.MQTTMessage) -> None:
        rest = msg.topic[len(self.topics.cmd):]
        parts = rest[1:].split("/") if rest else []
        req = self._read_request(msg, lambda: (
            parse_json(msg.payload) if not parts
            else parse_plain(parts[0], parts[1], msg.payload) if len(parts) == 2
            else Request(error="command topic must be cmd or cmd/<action>/<channel>")))
        self._accept(req)

    def _on_legacy(self, msg: paho.MQTTMessage) -> None:
        *_, kind, channel = msg.topic.split("/")
        self._accept(self._read_request(msg, lambda: parse_legacy(kind, channel, msg.payload)))

    def _read_request(self, msg: paho.MQTTMessage, parse) -> Request:
        try:
            check_size(msg.payload)
            req = parse()
        except CommandError as exc:
            req = Request(error=str(exc))
        if msg.retain:
            req.error = "retained commands are refused: a stale command must never run"
        props = getattr(msg, "properties", None)
        if props is not None:
            expiry = getattr(props, "MessageExpiryInterval", None)
            if expiry is not None:
                req.expires = req.received + expiry
            req.response_topic = getattr(props, "ResponseTopic", None)
            req.correlation = getattr(props, "CorrelationData", None)
        return req

    def _accept(self, req: Request) -> None:
        if req.response_topic and not self.topics.owns_response_topic(req.response_topic):
            topic, req.response_topic = req.response_topic, None
            self._reply(req, False, f"response topic {topic[:80]!r} must be {self.topics.reply} or a topic "
                                    "below it, without wildcards")
            return
        try:
            cmd = validate(req, self.rules)
            if self._driver is None:
                raise CommandError(f"instrument not connected ({self.error})")
        except CommandError as exc:
            self._reply(req, False, str(exc))
            return
        except Exception:  # a bug in validation still owes the sender a reply
            log.exception("validating a command failed")
            self._reply(req, False, "internal error while validating the command; not executed")
            return
        with self._accept_lock:
            if self._closing:
                self._reply(req, False, "service is shutting down; command not executed")
                return
            self.queue.put(cmd)

    def _reply(self, req: Request, ok: bool, error: str | None = None) -> None:
        body = json.dumps(req.reply(ok, error))
        if not ok:
            log.info("refused %s: %s", req.action, error)
        self.mqtt.publish(self.topics.reply, body, qos=1)
        if req.response_topic:
            props = publish_properties(CorrelationData=req.correlation) if req.correlation else None
            self.mqtt.publish(req.response_topic, body, qos=1, properties=props)

    def _command_loop(self) -> None:
        while not self.stop_event.is_set():
            ramps = self.ramps
            wait = min((r.due(RAMP_TICK) for r in ramps.values()), default=math.inf) - time.monotonic()
            try:
                cmd = self.queue.get(timeout=min(0.5, max(0.0, wait)))
            except queue.Empty:
                cmd = None
            if cmd is not None:
                try:
                    self._execute(cmd)
                except Exception:  # the worker must live on, and the command gets its one reply
                    log.exception("executing %s failed", cmd.action)
                    self._reply(cmd.request, False, "internal error while executing the command; "
                                                    "check the device status")
            if self.ramps:
                try:
                    self._step_ramps()
                except Exception:
                    log.exception("software ramp step failed")
                    self._abort_ramps()

    def _execute(self, cmd: Command) -> None:
        req = cmd.request
        stale = self._stale(req)
        if stale:
            self._reply(req, False, stale)
            return
        driver = self._driver
        if driver is None:
            self._reply(req, False, f"instrument not connected ({self.error})")
            return
        error, readback, started = None, {}, time.monotonic()
        try:
            with driver.link.lock.exclusive():
                started = time.monotonic()  # after the lock: a poll that read before us is older
                # decide from the instrument as it is now, not from the last poll
                current = driver.read([cmd.channel], full=False).get(cmd.channel)
                state = getattr(current, "state", None)
                if cmd.action == "on" and (state is ChannelState.TRIPPED or cmd.channel in self.latched_trips):
                    error = f"channel {cmd.channel} is tripped: send clear first"
                else:
                    try:
                        self._apply(driver, cmd, started, current)
                        self.ramp_aborted.discard(cmd.channel)
                        if cmd.action == "clear":
                            self.latched_trips.discard(cmd.channel)
                    except InstrumentError as exc:
                        error = f"instrument refused: {exc}"
                try:
                    readback = driver.read([cmd.channel], full=True)
                except InstrumentError as exc:  # applied, but not confirmed: the status says so
                    self._set_state(DeviceState.ERROR, f"reading back channel {cmd.channel} failed: {exc}")
        except LinkError as exc:
            self._link_lost(driver, exc)
            self._reply(req, False, f"instrument link failed: {exc}")
            return
        self._update(readback, started)
        self._publish_status()
        self._reply(req, error is None, error)

    def _stale(self, req: Request) -> str | None:
        """Why a queued command is too old to run now, or None."""
        now = time.monotonic()
        if now - req.received > self.cfg.max_command_age:
            return f"stale command: waited {now - req.received:.1f} s before it could run; not executed"
        if req.expires is not None and now > req.expires:
            return "stale command: its MQTT message expiry passed before it could run; not executed"
        if req.issued is not None and time.time() - req.issued > self.cfg.max_command_age:
            return (f"stale command: issued {time.time() - req.issued:.1f} s ago "
                    f"(max {self.cfg.max_command_age:g} s); not executed")
        return None

    def _apply(self, driver: Driver, cmd: Command, now: float, current: Reading | None) -> None:
        """Software-ramped channels are stepped by us; everything else goes to the driver as it is."""
        ch, value = cmd.channel, cmd.value
        if ch not in self.soft:
            driver.execute(cmd.action, ch, value)
            if cmd.action in ("rampup", "rampdown"):  # a reconnect re-applies what was commanded last
                up, down = self.rates[ch]
                self.rates[ch] = (value, down) if cmd.action == "rampup" else (up, value)  # type: ignore[assignment]
            return
        assert isinstance(driver, SupplyDriver) and isinstance(current, SupplyChannel)
        ramp = self.ramps.get(ch)
        switching_off = ramp is not None and ramp.switch_off_at_end
        programmed = ramp.programmed if ramp else self.targets.get(ch, current.vset)
        if cmd.action == "vset":
            assert value is not None
            self.targets[ch] = value
            if switching_off:
                pass  # the off-ramp goes on; the new target waits for the next "on"
            elif current.on:
                self._ramp(ch, now, programmed).start(value, now)
            else:
                driver.set_voltage(ch, value)  # output off: the instrument just holds the target
        elif cmd.action in ("rampup", "rampdown"):
            up, down = self.rates[ch]
            self.rates[ch] = (value, down) if cmd.action == "rampup" else (up, value)  # type: ignore[assignment]
        elif cmd.action == "on":
            target = self.targets.setdefault(ch, current.vset)
            if switching_off:
                ramp.switch_off_at_end = False  # type: ignore[union-attr]
                ramp.start(target, now)  # type: ignore[union-attr]
            elif not current.on:
                driver.set_voltage(ch, 0.0)
                driver.switch(ch, True)
                self._ramp(ch, now, 0.0).start(target, now)
        elif cmd.action == "off":
            if current.on and self.cfg.channels[ch].off_mode == "ramp":
                ramp = self._ramp(ch, now, programmed)
                ramp.switch_off_at_end = True
                ramp.start(0.0, now)
            else:
                self.ramps.pop(ch, None)
                driver.switch(ch, False)
                driver.set_voltage(ch, self.targets.get(ch, current.vset))
        else:
            self.ramps.pop(ch, None)
            driver.execute(cmd.action, ch, value)

    def _ramp(self, ch: int, now: float, start: float) -> SoftRamp:
        """The channel's running ramp, or a new one from `start` (the programmed voltage)."""
        ramp = self.ramps.get(ch)
        if ramp is None:
            ramp = self.ramps[ch] = SoftRamp(programmed=start, target=start, up=1.0, down=1.0,
                                             max_step=self.cfg.channels[ch].ramp_step, last=now)
        ramp.up, ramp.down = self.rates[ch]  # type: ignore[assignment]
        return ramp

    def _abort_ramps(self) -> None:
        aborted, self.ramps = self.ramps, {}
        self.ramp_aborted |= set(aborted)

    def _step_ramps(self) -> None:
        driver, ramps = self._driver, self.ramps
        if driver is None or not isinstance(driver, SupplyDriver):
            self._abort_ramps()  # the instrument holds its last step
            return
        now = time.monotonic()
        due = [ch for ch, r in ramps.items() if r.due(RAMP_TICK) <= now]
        if not due:
            return
        try:
            with driver.link.lock.exclusive():
                for ch in due:
                    ramp = ramps[ch]
                    driver.set_voltage(ch, ramp.step(now))
                    if not ramp.active:
                        if ramp.switch_off_at_end:
                            driver.switch(ch, False)
                            driver.set_voltage(ch, self.targets.get(ch, 0.0))
                        ramps.pop(ch, None)
                readings = driver.read(due, full=True)
        except LinkError as exc:
            self._link_lost(driver, exc)
            return
        except InstrumentError as exc:
            log.warning("software ramp stopped: %s", exc)
            self._abort_ramps()
            return
        self._update(readings, now)
        self._publish_status()

    # --- publishing -------------------------------------------------------------------------
    def _publish_status(self) -> None:
        if not self.mqtt.connected.is_set():
            return  # nothing piles up in paho while the broker is away; _announce re-publishes
        with self._pub_lock:
            self.seq += 1
            ts = int(time.time() * 1000)
            # only readings we vouch for: none while disconnected or while polls fail
            readings = dict(self.readings) if self.state is DeviceState.OK else {}
            status: dict[str, Any] = {
                "device": self.id, "model": self.cfg.model, "ts": ts, "seq": self.seq,
                "state": self.state.value, "error": self.error, "identity": self.identity,
                "channels": [channel_dict(ch, self.names[ch], readings.get(ch)) for ch in self.channels],
            }
            self.mqtt.publish(self.topics.status, json.dumps(status), qos=1, retain=True)
            if readings:
                self.mqtt.publish(self.topics.metrics, metrics_lines(self.id, self.names, readings, ts, self.kind), qos=1)
                if self.legacy:
                    self.mqtt.publish(self.legacy.status, json.dumps(legacy_status(readings)), qos=1, retain=True)

    def _publish_health(self) -> None:
        if not self.mqtt.connected.is_set():
            return
        h = self.health
        body = {
            "device": self.id, "ts": int(time.time() * 1000), "uptime": round(time.monotonic() - self.started, 3),
            "poll_cycles": h.poll_cycles, "last_poll_duration": h.last_poll_duration,
            "consecutive_errors": h.consecutive_errors, "errors": h.errors,
            "connected": self._driver is not None, "restarts": h.restarts,
        }
        self.mqtt.publish(self.topics.health, json.dumps(body), qos=1, retain=True)
