"""JULABO recirculating chillers (FP50, CF series and others with the JULABO serial command set).

`in_pv_00` CR -> `21.53` CR LF (bath temperature). `out_` commands give no reply at all,
so after each one the driver reads the value back with the matching `in_` command and
raises InstrumentError when it was not taken (with the chiller's `status` as the reason).
Defaults are the CF-series line settings (4800 7E1, CR, 250 ms between commands), which are
slow but safe for every model; docs/instruments/julabo.md shows the FP50 settings too.
The chiller works to one of three setpoints (sp_00..sp_02), the one `in_mode_01` selects: the
driver reads and sets that one, the working temperature the chiller shows, whichever is selected
(read at connect, on full reads and before each setpoint change).
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, Field

from slowctl.drivers.base import ChannelParam, ChillerDriver, NoOptions
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
from slowctl.drivers.readings import ChannelState, ChillerChannel
from slowctl.drivers.wire import fixed, flag

STATUS = re.compile(r"\s*(-?\d{1,3})\b\s*(.*)")


def setpoint_number(text: str) -> int:
    """`in_mode_01` -> 0, 1 or 2: the active setpoint (sp_00..sp_02); anything else is a garbled line."""
    value = int(text.strip())
    if value not in (0, 1, 2):
        raise ValueError(text)
    return value


def status_reply(text: str) -> tuple[int, str]:
    """`03 REMOTE START` -> (3, 'REMOTE START'); a negative code is an alarm or a warning."""
    m = STATUS.fullmatch(text)
    if m is None:
        raise ValueError(text)
    return int(m.group(1)), m.group(2).strip()


class JulaboOptions(NoOptions):
    out_interval: float = Field(
        default=0.25, ge=0, le=5, description="quiet time after an out_ command before the next request (s)"
    )
    connect_attempts: int = Field(
        default=2,
        ge=1,
        le=5,
        description="version queries at connect: the first one after opening the port may go unanswered (unconfirmed)",
    )
    setpoint_resolution: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="°C, the setpoint step the chiller holds: a finer setpoint "
        "is refused, a read-back within half of it counts as taken",
    )
    unit_check: bool = Field(
        default=False,
        description="refuse a chiller whose in_sp_06 is not 0 (°C) (unconfirmed outside the FP5x HighTech series)",
    )


class Julabo(ChillerDriver):
    model = "julabo"
    description = "JULABO recirculating chiller (FP50, CF series)"
    Options = JulaboOptions
    max_channels = 1
    link_settings = LinkSettings(
        write_termination="\r",
        read_termination="\n",
        baudrate=4800,
        bytesize=7,
        parity="E",
        stopbits=1,
        min_interval=0.25,
    )

    # set with out_<command>, read with the query; the setpoint step is the setpoint_resolution option;
    # `{n}` is the active setpoint (in_mode_01)
    tset = ChannelParam("sp_0{n}", "°C", limits=(-95.0, 400.0), resolution=0.01, query="in_sp_0{n}")
    active = ChannelParam("mode_01", kind=setpoint_number, readonly=True, query="in_mode_01")
    temperature = ChannelParam("pv_00", "°C", readonly=True, query="in_pv_00")
    running = ChannelParam("mode_05", kind=flag, query="in_mode_05")
    status = ChannelParam("status", kind=status_reply, readonly=True, query="status")  # (code, text)

    options: JulaboOptions

    @classmethod
    def instrument_step(cls, action: str, options: BaseModel | None = None, value: float | None = None) -> float | None:
        """The setpoint step is the chiller's (option setpoint_resolution): the models differ."""
        if action == "tset" and isinstance(options, JulaboOptions):
            return options.setpoint_resolution
        return super().instrument_step(action, options, value)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tset: float | None = None  # cached between full reads
        self._active = 0  # the setpoint in_mode_01 selects, read at connect, on full reads and before a change
        self._last_out = -float("inf")

    # --- protocol ----------------------------------------------------------
    def _wait_after_out(self) -> None:
        wait = self._last_out + self.options.out_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _ask(self, request: str) -> str:
        self._wait_after_out()
        return self.link.query(request)

    def _get(self, param: ChannelParam, channel: int) -> str:
        return self._ask(param.query_text(n=self._active))

    def _set(self, param: ChannelParam, channel: int, value: float) -> None:
        # the step was checked already (instrument_step): its decimals carry the value exactly
        text = fixed(value, self.options.setpoint_resolution) if param.kind is float else str(int(value))
        if param.name == "tset":
            self._active = self.active[0]  # the front panel may have selected another setpoint since
        command = param.command.format(n=self._active)
        self._wait_after_out()
        try:
            self.link.write(f"out_{command} {text}")
        finally:
            self._last_out = time.monotonic()
        taken = getattr(self, param.name)[channel]  # the only confirmation a JULABO gives
        if param.kind is float:
            ok = abs(taken - value) <= self.options.setpoint_resolution / 2 + 1e-9
        else:
            ok = taken == bool(value)
        if not ok:
            code, status = self.status[0]
            raise InstrumentError(
                f"out_{command} {text} was not taken: in_{command} reads "
                f"{taken:g}" + (f"; status {code} {status}" if code < 0 else "")
            )

    # --- the framework's view ----------------------------------------------
    def connect(self) -> str:
        for attempt in range(self.options.connect_attempts):
            try:
                version = self._ask("version")
                break
            except LinkError:
                if attempt == self.options.connect_attempts - 1:
                    raise
        if not version.strip().upper().startswith("JULABO"):
            raise LinkError(f"not a JULABO: {version[:64]!r}")
        self.status[0]  # takes a stale command error (e.g. -08 INVALID COMMAND) off the status
        if self.options.unit_check:
            unit = self._ask("in_sp_06").strip()
            if unit != "0":
                raise InstrumentError(f"the chiller works in °F (in_sp_06 = {unit!r}): set it to °C")
        self._active = self.active[0]
        self._tset = None
        return version.strip()

    def switch(self, channel: int, on: bool) -> None:
        self.running[channel] = on

    def read(self, channels: list[int], full: bool) -> dict[int, ChillerChannel]:
        if full or self._tset is None:
            self._active = self.active[0]
            self._tset = self.tset[0]
        temperature = self.temperature[0]
        on = self.running[0]
        code, status = self.status[0]
        if code < 0:
            state, alarms = ChannelState.ERROR, [status or f"error {code}"]
        else:
            state, alarms = (ChannelState.ON if on else ChannelState.OFF), []
        reading = ChillerChannel(
            on=on, tset=self._tset, temperature=temperature, state=state, status_code=code, status=status, alarms=alarms
        )
        return {ch: reading for ch in channels}
