"""`from slowctl import Client`: the bench from Python scripts and notebooks (docs/python-api.md).

One MQTT connection for many calls, safe to share between threads. Commands go the way every command goes
(the device decides, interlocks apply, the recorder records it under the login used); a refusal raises
`Refused` with the device's reason.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slowctl.client.api import ClientError, accepted, open_session, resolve_endpoint
from slowctl.device.contract import CommandTopics, InterlockTopics, ProcedureTopics, Topics
from slowctl.mqtt import Endpoint, MqttSession, publish_properties

RAMPING = ("RAMP_UP", "RAMP_DOWN")
# the devices' retained capabilities arrive right behind the SUBACK: this long without one, all have come
RETAINED_QUIET = 0.3


class Refused(ClientError):
    """The device refused the command; `reply` is its reply, `reason` why."""

    def __init__(self, device: str, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.reason = str(reply.get("error"))
        super().__init__(f"{device}: {reply.get('action')} refused: {self.reason}")


Handler = Callable[[str, str, dict[str, Any]], None]  # (kind: "status" | "event", device, payload)


class Client:
    """Connect with explicit settings, else SLOWCTL_MQTT_* from the environment, else the running native
    stack in `state_dir` (default: ./.slowctl when its stack runs, else the one `slowctl up` registered) as
    `role`."""

    def __init__(
        self,
        host: str | None = None,
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        *,
        tls_ca: str | None = None,
        topic_root: str | None = None,
        state_dir: str | Path | None = None,
        role: str = "operator",
        timeout: float = 5.0,
    ) -> None:
        if host is not None:
            endpoint, root = Endpoint(host, port, username, password, tls_ca), topic_root or "slowctl"
        else:
            endpoint, root = resolve_endpoint(Path(state_dir) if state_dir else None, role)
            root = topic_root or root
        self.endpoint = endpoint
        self.root = root
        self.timeout = timeout
        self.login = endpoint.username
        self._me = uuid.uuid4().hex[:12]
        self._lock = threading.Condition()
        self._status: dict[str, dict[str, Any]] = {}
        self._availability: dict[str, str] = {}
        self._last_announced = 0.0  # monotonic time of the latest capabilities (or of the SUBACK before)
        self._replies: dict[str, dict[str, Any]] = {}
        self._handlers: list[tuple[str, str, Handler]] = []
        self._capabilities: dict[str, dict[str, Any]] = {}
        self._interlock: dict[str, Any] = {}  # the interlock process: its retained state and availability
        self._runs: dict[str, dict[str, Any]] = {}  # the procedure runner's retained progress, per run
        self._catalog: dict[str, Any] | None = None
        self._session: MqttSession | None = None
        self._owner = True  # False for a view made by acting_for: it shares this connection
        self.on_behalf: str | None = None

    # --- connection ---------------------------------------------------------------------------
    def connect(self) -> Client:
        if self._session is not None:
            return self
        self._session = open_session(
            self.endpoint,
            self.timeout,
            f"slowctl-py-{self._me}",
            (
                (f"{self.root}/+/status", self._on_status),
                (f"{self.root}/+/availability", self._on_availability),
                (f"{self.root}/+/event", self._on_event),
                (f"{self.root}/+/reply/{self._me}", self._on_reply),
                (f"{self.root}/+/capabilities", self._on_capabilities),
                (InterlockTopics(self.root).state, self._on_interlock),
                (f"{ProcedureTopics(self.root).progress_root}/+", self._on_progress),
                (ProcedureTopics(self.root).catalog, self._on_catalog),
            ),
        )
        return self

    def acting_for(self, person: str | None) -> Client:
        """A view of this client whose commands say they are for `person` (`"for"`): only a front-end login
        (nodered, procedures) may do that, the devices refuse it from anyone else. It shares this
        connection; closing the view does nothing."""
        view = copy.copy(self)
        view._owner, view.on_behalf = False, person
        return view

    def close(self) -> None:
        if self._session is not None and self._owner:
            self._session.stop()
            self._session = None

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def session(self) -> MqttSession:
        if self._session is None:
            self.connect()
        assert self._session is not None
        return self._session

    # --- reading --------------------------------------------------------------------------------
    def status(self, device: str, timeout: float | None = None) -> dict[str, Any]:
        """The device's latest status (retained: there at once once it has spoken)."""
        self.require(device)
        with self._lock:
            if not self._lock.wait_for(lambda: device in self._status, timeout or self.timeout):
                where = self._availability.get(device, "not announced")
                raise ClientError(f"no status from device {device!r} (it is {where})")
            return self._status[device]

    def require(self, device: str, timeout: float | None = None) -> None:
        """Returns once `device` has announced itself (its retained capabilities); ClientError naming the
        known devices as soon as the retained announcements are in and it is not among them (a mistyped name)."""
        self.connect()
        with self._lock:
            if device in self._capabilities:
                return
        timeout = timeout or self.timeout
        if not self.session.subscribed.wait(timeout):
            raise ClientError(f"the broker did not acknowledge the subscriptions within {timeout:g} s")
        deadline = time.monotonic() + timeout
        with self._lock:
            self._last_announced = max(self._last_announced, time.monotonic())
            while device not in self._capabilities:
                now = time.monotonic()
                if now - self._last_announced > RETAINED_QUIET or now > deadline:
                    known = ", ".join(sorted(self._capabilities)) or "none: is the stack running?"
                    raise ClientError(f"unknown device {device!r} (known: {known})")
                self._lock.wait(RETAINED_QUIET / 3)

    def channel(self, device: str, channel: int) -> dict[str, Any]:
        for c in self.status(device)["channels"]:
            if c["channel"] == channel:
                return c
        raise ClientError(f"{device} has no channel {channel}")

    def online(self, device: str) -> bool:
        self.connect()
        with self._lock:
            return self._availability.get(device) == "online"

    def capabilities(self, device: str, timeout: float | None = None) -> dict[str, Any]:
        """The device's retained capabilities: per channel, each action it accepts with unit, min, max, step
        (and the channel's polarity where the instrument has one)."""
        self.require(device, timeout)
        with self._lock:
            return self._capabilities[device]

    def action(self, device: str, channel: int, action: str) -> dict[str, Any]:
        """What `action` on that channel accepts: {"unit", "min", "max", "step", "doc"}; ClientError if none."""
        for c in self.capabilities(device)["channels"]:
            if c["channel"] == channel:
                if action not in c["actions"]:
                    raise ClientError(f"{device}.{channel} does not accept {action!r} (it accepts: "
                                      f"{', '.join(sorted(c['actions']))})")  # fmt: skip
                return dict(c["actions"][action], polarity=c.get("polarity"))
        raise ClientError(f"{device} has no channel {channel}")

    def interlocked(self, device: str, channel: int, timeout: float = 1.0) -> list[str]:
        """Why the interlock forbids switching this channel on now: the active rules protecting it, or the
        interlock process being away (the devices then refuse `on` of protected channels). [] when free."""
        self.connect()
        with self._lock:
            self._lock.wait_for(lambda: "state" in self._interlock, timeout)
            state = self._interlock.get("state")
        if state is None:
            return []  # no interlock configured on this bench (it has never spoken)
        where = f"{device}.{channel}"
        protecting = {name: r for name, r in state.get("rules", {}).items() if where in r.get("protects", ())}
        reasons = [f"interlock {name} active: {r.get('reason')}" for name, r in sorted(protecting.items())
                   if r.get("active")]  # fmt: skip
        return reasons

    def wait_until(
        self,
        condition: Callable[[Client], bool] | str,
        channel: int | None = None,
        field: str | None = None,
        *,
        equals: Any = None,
        above: float | None = None,
        below: float | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Until `condition(client)` is true, or until `device`'s `channel` `field` equals / is above /
        below a value (re-checked on every status); ClientError on timeout."""
        test: Callable[[Client], bool]
        if isinstance(condition, str):
            device, what = condition, f"{condition}.{channel}.{field}"
            if channel is None or field is None or (equals is None and above is None and below is None):
                raise ValueError("wait_until(device, channel, field, equals=... | above=... | below=...)")

            def compare(c: Client) -> bool:
                value = c._field(device, channel, field)
                return (
                    (equals is None or value == equals)
                    and (above is None or (isinstance(value, (int, float)) and value > above))
                    and (below is None or (isinstance(value, (int, float)) and value < below))
                )

            test = compare
        else:
            test, what = condition, getattr(condition, "__name__", "condition")
        self.connect()
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._check(test):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientError(f"timed out after {timeout:g} s waiting for {what}")
                self._lock.wait(min(left, 0.5))

    def _check(self, test: Callable[[Client], bool]) -> bool:
        try:
            return bool(test(self))
        except (KeyError, StopIteration, ClientError):
            return False  # not known yet

    def _field(self, device: str, channel: int, field: str) -> Any:
        status = self._status[device]
        return next(c for c in status["channels"] if c["channel"] == channel)[field]

    # --- commanding -------------------------------------------------------------------------------
    def set(
        self, device: str, channel: int, action: str, value: float | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one command and return the device's reply; `Refused` when it refuses."""
        timeout = timeout or self.timeout
        self.require(device)
        body: dict[str, Any] = {"action": action, "channel": channel}
        if value is not None:
            body["value"] = value
        reply = self._command(Topics(self.root, device).commands, body, timeout, device)
        if not reply.get("ok"):
            raise Refused(device, reply)
        return reply

    def _command(self, commands: CommandTopics, body: dict[str, Any], timeout: float, target: str) -> dict[str, Any]:
        """Publishes a JSON command to a target (a device, the procedure runner) and waits for its reply
        on this client's own response topic."""
        cid = f"{self._me}-{uuid.uuid4().hex[:8]}"
        body = {**body, "id": cid, "ts": time.time()}
        if self.on_behalf is not None:
            body["for"] = self.on_behalf
        props = publish_properties(
            ResponseTopic=f"{commands.base}/reply/{self._me}",
            CorrelationData=cid.encode(),
            MessageExpiryInterval=max(1, math.ceil(timeout)),
        )
        deadline = time.monotonic() + timeout
        info = self.session.publish(commands.of(self.login), json.dumps(body), qos=1, properties=props)
        accepted(self.session, info, self.login, target, timeout)
        with self._lock:
            if not self._lock.wait_for(lambda: cid in self._replies, max(0.0, deadline - time.monotonic())):
                where = "online" if self._availability.get(target) == "online" else "not online"
                raise ClientError(f"no reply from {target!r} within {timeout:g} s (it is {where})")
            return self._replies.pop(cid)

    # --- procedures (docs/procedures.md) -------------------------------------------------------------------
    def procedures(self, timeout: float | None = None) -> dict[str, Any]:
        """The runner's catalog: every procedure with its parameters."""
        self.connect()
        with self._lock:
            if not self._lock.wait_for(lambda: self._catalog is not None, timeout or self.timeout):
                raise ClientError("no procedure runner has spoken (is it running? slowctl status)")
            assert self._catalog is not None
            return self._catalog

    def start_procedure(self, name: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> str:
        """Starts a run; its id, or `Refused` with the runner's reason (nothing has moved then)."""
        self.connect()
        body = {"action": "start", "procedure": name, "params": params or {}}
        reply = self._command(ProcedureTopics(self.root).commands, body, timeout or self.timeout, "procedures")
        if not reply.get("ok"):
            raise Refused("procedures", reply)
        return str(reply["run"])

    def abort_procedure(self, run: str, timeout: float | None = None) -> dict[str, Any]:
        """Asks the runner to abort a run (it ramps down to the safe voltage, then stops)."""
        self.connect()
        body = {"action": "abort", "run": run}
        reply = self._command(ProcedureTopics(self.root).commands, body, timeout or self.timeout, "procedures")
        if not reply.get("ok"):
            raise Refused("procedures", reply)
        return reply

    def run_progress(self, run: str) -> dict[str, Any] | None:
        """The run's latest progress (state, step, percent, eta, last point), None before the first."""
        self.connect()
        with self._lock:
            return self._runs.get(run)

    def wait_for_run(
        self, run: str, timeout: float | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Until the run has ended (completed, stopped, aborted, failed); its final progress. `on_progress`
        is called with each new progress message (on this thread)."""
        self.connect()
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: dict[str, Any] | None = None
        with self._lock:
            while True:
                now = self._runs.get(run)
                if now is not None and now is not seen:
                    seen = now
                    if on_progress is not None:
                        self._lock.release()
                        try:
                            on_progress(now)
                        finally:
                            self._lock.acquire()
                    if now.get("state") in ("completed", "stopped", "aborted", "failed"):
                        return now
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ClientError(f"run {run} has not ended after {timeout:g} s")
                self._lock.wait(0.5 if left is None else min(left, 0.5))

    def ramp_to(self, device: str, channel: int, volts: float, timeout: float | None = None) -> dict[str, Any]:
        """`vset` and wait until the channel has got there (no longer ramping, Vmon within 1 % or 1 V of the
        target when the output is on); the final channel status. The wait allows for the ramp rate."""
        before = self.channel(device, channel)
        self.set(device, channel, "vset", volts)
        if not before.get("on"):
            return self.channel(device, channel)
        rate = before.get("rampup" if volts > (before.get("vmon") or 0) else "rampdown") or 1.0
        limit = timeout or abs(volts - (before.get("vmon") or 0)) / max(rate, 1e-3) * 1.5 + 10

        def there(c: Client) -> bool:
            ch = c.channel(device, channel)
            vmon = ch.get("vmon")
            return (
                ch.get("state") not in RAMPING and vmon is not None and abs(vmon - volts) <= max(1.0, abs(volts) / 100)
            )

        self.wait_until(there, timeout=limit)
        return self.channel(device, channel)

    # --- subscriptions ------------------------------------------------------------------------------
    def subscribe(self, handler: Handler, device: str = "+", kinds: tuple[str, ...] = ("status", "event")) -> Callable:
        """`handler(kind, device, payload)` for every status and event (of `device`, or all); called on the
        client's network thread, so it must be quick. Returns a function that unsubscribes."""
        self.connect()
        entries = [(device, kind, handler) for kind in kinds]
        with self._lock:
            self._handlers.extend(entries)

        def unsubscribe() -> None:
            with self._lock:
                self._handlers = [h for h in self._handlers if h not in entries]

        return unsubscribe

    # --- paho's thread ------------------------------------------------------------------------------
    def _device(self, topic: str) -> str:
        return topic[len(self.root) + 1 :].split("/", 1)[0]

    def _on_status(self, msg: Any) -> None:
        self._deliver("status", msg, lambda dev, data: self._status.__setitem__(dev, data))

    def _on_event(self, msg: Any) -> None:
        self._deliver("event", msg, None)

    def _deliver(self, kind: str, msg: Any, keep: Callable[[str, dict], None] | None) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        device = self._device(msg.topic)
        with self._lock:
            if keep:
                keep(device, data)
            handlers = [h for d, k, h in self._handlers if k == kind and d in ("+", device)]
            self._lock.notify_all()
        for h in handlers:
            h(kind, device, data)

    def _on_capabilities(self, msg: Any) -> None:
        def keep(data: dict[str, Any]) -> None:
            self._capabilities[self._device(msg.topic)] = data
            self._last_announced = time.monotonic()

        self._keep(msg, keep)

    def _on_interlock(self, msg: Any) -> None:
        self._keep(msg, lambda data: self._interlock.__setitem__("state", data))

    def _on_progress(self, msg: Any) -> None:
        run = msg.topic.rsplit("/", 1)[1]
        if not msg.payload:  # cleared
            with self._lock:
                self._runs.pop(run, None)
            return
        self._keep(msg, lambda data: self._runs.__setitem__(run, data))

    def _on_catalog(self, msg: Any) -> None:
        self._keep(msg, lambda data: setattr(self, "_catalog", data))

    def _keep(self, msg: Any, keep: Callable[[dict[str, Any]], None]) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(data, dict):
            with self._lock:
                keep(data)
                self._lock.notify_all()

    def _on_availability(self, msg: Any) -> None:
        with self._lock:
            self._availability[self._device(msg.topic)] = msg.payload.decode(errors="replace")
            self._lock.notify_all()

    def _on_reply(self, msg: Any) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            with self._lock:
                self._replies[data["id"]] = data
                self._lock.notify_all()
