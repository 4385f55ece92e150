"""What a procedure is: a class with declared parameters and a `run(run)` body that uses the Python
Client API (`run.client`) and nothing private (docs/procedures.md).

The runner gives the body a `Run`: the client acting for the person who started it, `point()` to
record a data point, `progress()`, and `sleep()` / `check()` that raise `Aborted` when someone aborts
and `Stopped` when a driven channel tripped, went off or went offline. Whatever ends the body, the
runner then calls `safe(run)`: by default every driven channel is ramped to the safe voltage and, at
0 V, switched off.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from slowctl.client.api import ClientError
from slowctl.client.client import Client, Refused
from slowctl.procedures.params import ChannelRef, Number, Param, ParamError, plain

OUTCOMES = ("completed", "stopped", "aborted", "failed")  # stopped: a stop criterion of the procedure
TRIPPED = ("TRIPPED",)


class Aborted(Exception):
    """Somebody aborted the run."""


class Stopped(Exception):
    """A stop criterion met (breakdown, current limit): the run ends `stopped`, with this reason."""


class Failed(Exception):
    """The bench did not let the run go on (refusal, trip, interlock, device or broker lost)."""


@dataclass(frozen=True)
class Plot:
    """What `slowctl procedure export --png` draws: the `y` fields against `x`, the `right` ones on a
    second axis; names may be patterns (`i_*`, `*.temperature`); `scale` multiplies for display."""

    x: str
    y: tuple[str, ...]
    xlabel: str
    ylabel: str
    right: tuple[str, ...] = ()  # on a second axis (temperatures, humidity)
    rlabel: str = ""
    scale: dict[str, float] | None = None  # a factor per field for the plot (A -> µA)


class Procedure:
    """Subclass it, declare parameters as class attributes, write `run`."""

    name: ClassVar[str]
    title: ClassVar[str]
    plot: ClassVar[Plot | None] = None
    params: ClassVar[dict[str, Param[Any]]] = {}
    safe_voltage = Number("V", 0.0, lo=0, doc="where abort and the end bring every driven channel (magnitude)")
    # instruments need a moment after a command before their status shows it
    settle_floor: ClassVar[float] = 0.0

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        found: dict[str, Param[Any]] = {}
        for klass in cls.__mro__:  # the procedure's own first, then what every procedure has
            found.update({k: v for k, v in vars(klass).items() if isinstance(v, Param) and k not in found})
        cls.params = found

    def __init__(self, **raw: Any) -> None:
        """Parsed and checked parameters, or ParamError naming each problem."""
        unknown = sorted(set(raw) - set(self.params))
        errors = [f"{k}: unknown parameter of {self.name} (it takes: {', '.join(self.params)})" for k in unknown]
        self.values: dict[str, Any] = {}
        for name, p in self.params.items():
            if name in raw:
                try:
                    self.values[name] = p.parse(raw[name])
                except ParamError as exc:
                    errors.append(str(exc))
            elif p.required:
                errors.append(f"{name}: required ({p.doc})" if p.doc else f"{name}: required")
            else:
                self.values[name] = p.default
        if not errors:
            errors = self.validate()
        if errors:
            raise ParamError("; ".join(errors))

    # --- what a procedure may override --------------------------------------------------------------
    def validate(self) -> list[str]:
        """Problems among the parameters themselves (stop below start ...); [] when fine."""
        return []

    def check(self, client: Client) -> list[str]:
        """Problems against the bench as it is, before anything moves: limits, polarity, grid. [] when fine."""
        return []

    def run(self, run: Run) -> None:
        raise NotImplementedError

    def safe(self, run: Run) -> None:
        """After the body, whatever ended it: driven channels to the safe voltage, and off at 0 V."""
        for ref in self.driven():
            run.make_safe(ref, self.safe_voltage)

    # --- read by the runner ---------------------------------------------------------------------------
    def driven(self) -> list[ChannelRef]:
        """The channels this run commands: one run per channel at a time, interlocks checked on them."""
        out: list[ChannelRef] = []
        for name, p in self.params.items():
            if p.drives:
                value = self.values[name]
                out.extend(value if isinstance(value, tuple) else [value])
        return out

    def parameters(self) -> dict[str, Any]:
        return {k: plain(v) for k, v in self.values.items()}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The catalog entry (the UI builds its form from it; `slowctl procedure available` prints it)."""
        return {
            "name": cls.name,
            "title": cls.title,
            "doc": inspect.cleandoc(cls.__doc__ or ""),
            "params": {n: p.describe() for n, p in cls.params.items()},
            # what export --png draws: the UI draws a past run's points the same way
            "plot": asdict(cls.plot) if cls.plot is not None else None,
        }


class Run:
    """The running procedure's handle on the bench and on its record."""

    def __init__(
        self,
        run_id: str,
        procedure: Procedure,
        client: Client,
        record: Callable[[dict[str, Any]], None],
        progress: Callable[[dict[str, Any]], None],
        note: Callable[[str], None],
        environment: tuple[str, ...] = (),
    ) -> None:
        self.id = run_id
        self.procedure = procedure
        self.client = client
        self.abort_request = threading.Event()
        self.aborted_by: str | None = None
        self.started = time.time()
        self.seq = 0
        self.watched: dict[ChannelRef, str] = {}  # channel -> what it must stay: "on"
        self.environment_readings = environment
        self._record, self._progress, self._note = record, progress, note
        self.last_point: dict[str, Any] | None = None

    # --- the body's calls ----------------------------------------------------------------------------------
    def point(self, **values: Any) -> dict[str, Any]:
        """Records one data point (with its time and the environment readings) and returns it."""
        self.seq += 1
        point = {"seq": self.seq, "ts": time.time(), **values, **self.environment()}
        self.last_point = point
        self._record(point)
        return point

    def progress(self, step: int, steps: int, message: str = "", eta: float | None = None) -> None:
        """Where the run is: step of steps; the ETA is estimated from the pace so far unless given."""
        elapsed = time.time() - self.started
        if eta is None and step > 0:
            eta = elapsed / step * max(steps - step, 0)
        self._progress(
            {
                "step": step,
                "steps": steps,
                "percent": round(100.0 * step / steps, 1) if steps else None,
                "eta": round(eta, 1) if eta is not None else None,
                "message": message,
                "last": self.last_point,
            }
        )

    def note(self, text: str) -> None:
        """A line in the run's record (a criterion close to acting, a choice made)."""
        self._note(text)

    def set(self, ref: ChannelRef, action: str, value: float | None = None) -> dict[str, Any]:
        """A command through the client; a refusal ends the run (`Failed`, with the device's reason)."""
        self.check()
        try:
            return self.client.set(ref.device, ref.channel, action, value)
        except Refused as exc:
            raise Failed(f"{ref}: {action} refused: {exc.reason}") from None
        except ClientError as exc:
            raise Failed(f"{ref}: {action}: {exc}") from None

    def watch(self, ref: ChannelRef) -> None:
        """From now on the channel must stay on: a trip, an output switched off (by an interlock, at the
        instrument) or the device going offline ends the run."""
        self.watched[ref] = "on"

    def sleep(self, seconds: float) -> None:
        """Waits, checking the bench twice a second; raises Aborted / Failed at once."""
        end = time.monotonic() + seconds
        while True:
            self.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.abort_request.wait(min(left, 0.5))

    def wait(self, condition: Callable[[Client], bool], timeout: float, what: str) -> None:
        """Until `condition(client)`, checking the bench meanwhile; Failed after `timeout` s."""
        end = time.monotonic() + timeout
        while True:
            self.check()
            try:
                if condition(self.client):
                    return
            except (KeyError, StopIteration, ClientError):
                pass
            if time.monotonic() > end:
                raise Failed(f"timed out after {timeout:g} s waiting for {what}")
            self.abort_request.wait(0.1)

    def check(self) -> None:
        """Raises Aborted when aborted, Failed when a watched channel is no longer as it must be."""
        if self.abort_request.is_set():
            raise Aborted(f"aborted by {self.aborted_by}" if self.aborted_by else "aborted")
        if not self.client.session.connected.is_set():
            raise Failed("the broker connection was lost: the run cannot watch its channels")
        for ref in self.watched:
            problem = self._trouble(ref)
            if problem:
                raise Failed(problem)

    def _trouble(self, ref: ChannelRef) -> str | None:
        if not self.client.online(ref.device):
            return f"{ref.device} went offline"
        ch = self.client.channel(ref.device, ref.channel)
        where = f"{ref} at {_volts(ch)}"
        if ch.get("state") in TRIPPED or "TRIP" in (ch.get("alarms") or []):
            return f"{ref} tripped ({where})"
        if not ch.get("on"):
            why = "; ".join(self.client.interlocked(ref.device, ref.channel))
            return f"{ref} was switched off without the run asking ({why or 'not by an interlock'})"
        return None

    # --- helpers the built-in procedures share ------------------------------------------------------------------
    def environment(self) -> dict[str, Any]:
        """The configured environment readings now (`climate_0_temperature` ...), None where unknown."""
        out: dict[str, Any] = {}
        for reading in self.environment_readings:
            device, channel, field = reading.split(".", 2)
            try:
                value = self.client.channel(device, int(channel)).get(field)
            except (ClientError, KeyError, ValueError):
                value = None
            out[field_name(reading)] = value if self.client.online(device) else None
        return out

    def ramp(self, ref: ChannelRef, volts: float, timeout: float | None = None) -> dict[str, Any]:
        """vset and wait until the channel is there (not ramping, vmon within 1 % or 1 V), or held below it
        by its current limit (state COMPLIANCE)."""
        before = self.client.channel(ref.device, ref.channel)
        self.set(ref, "vset", volts)
        if not before.get("on"):
            return self.client.channel(ref.device, ref.channel)
        rate = before.get("rampup" if volts > (before.get("vmon") or 0) else "rampdown") or 1.0
        limit = timeout or abs(volts - (before.get("vmon") or 0)) / max(rate, 1e-3) * 1.5 + 10

        def there(c: Client) -> bool:
            ch = c.channel(ref.device, ref.channel)
            vmon = ch.get("vmon")
            if ch.get("state") == "COMPLIANCE":
                return True  # held by the current limit: it will not get there (the caller sees the state)
            return (
                ch.get("state") not in ("RAMP_UP", "RAMP_DOWN")
                and vmon is not None
                and abs(vmon - volts) <= max(1.0, abs(volts) / 100)
            )

        self.wait(there, limit, f"{ref} to reach {volts:g} V")
        return self.client.channel(ref.device, ref.channel)

    def switch_on(self, ref: ChannelRef) -> None:
        """`on` (refused by the device when an interlock or a limit forbids it), then watched."""
        ch = self.client.channel(ref.device, ref.channel)
        if not ch.get("on"):
            self.set(ref, "on")
            self.wait(lambda c: bool(c.channel(ref.device, ref.channel).get("on")), 30.0, f"{ref} to switch on")
        self.watch(ref)

    def make_safe(self, ref: ChannelRef, volts: float) -> None:
        """To `volts` (and off at 0 V), whether or not the run was aborted; never raises."""
        self.watched.pop(ref, None)
        make_safe(self.client, ref, volts, self.note)


def field_name(reading: str) -> str:
    """A reading as a point's field: `climate.0.temperature` -> `climate_0_temperature` (MongoDB field
    names hold no dots)."""
    return reading.replace(".", "_")


def _volts(ch: dict[str, Any]) -> str:
    vmon = ch.get("vmon")
    return f"{vmon:g} V" if isinstance(vmon, (int, float)) else "unknown voltage"


def make_safe(client: Client, ref: ChannelRef, volts: float, note: Callable[[str], None]) -> None:
    """Brings a channel to `volts` (and off at 0 V); what is already off stays off. Never raises: what it
    could not do goes into the record through `note`."""
    try:
        ch = client.channel(ref.device, ref.channel)
        margin = max(1.0, volts / 100)
        if not ch.get("on"):
            if (ch.get("vset") or 0) > volts:
                client.set(ref.device, ref.channel, "vset", volts)  # off: no ramp to wait for
            return
        if (ch.get("vmon") or 0) > volts + margin or (ch.get("vset") or 0) > volts:
            client.set(ref.device, ref.channel, "vset", volts)
            rate = ch.get("rampdown") or 1.0

            def down(c: Client) -> bool:
                now = c.channel(ref.device, ref.channel)
                return (now.get("vmon") or 0) <= volts + margin or not now.get("on")

            client.wait_until(down, timeout=(ch.get("vmon") or 0) / max(rate, 1e-3) * 1.5 + 15)
        if volts == 0:
            client.set(ref.device, ref.channel, "off")
            # until the output says off: a run that ends sooner hands over a channel still ramping its last volt
            # down (`on`), and the next run on it would take it for on and then see it go off under it
            client.wait_until(lambda c: not c.channel(ref.device, ref.channel).get("on"), timeout=30)
        note(f"{ref} brought to {volts:g} V{' and switched off' if volts == 0 else ''}")
    except Refused as exc:
        note(f"{ref}: could not bring it to {volts:g} V: {exc.reason}")
    except ClientError as exc:
        note(f"{ref}: could not bring it to {volts:g} V: {exc}")
