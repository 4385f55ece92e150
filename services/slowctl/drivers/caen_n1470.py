"""CAEN N1470 / DT1470ET / DT1471ET desktop HV: CAEN desktop ASCII protocol.

`$BD:00,CMD:MON,CH:0,PAR:VMON` CR LF  ->  `#BD:00,CMD:OK,VAL:0100.0` CR LF.
Currents travel in µA on the wire and in A everywhere else.
"""

from __future__ import annotations

from pydantic import Field

from slowctl.drivers.base import ChannelParam, NoOptions, SupplyDriver
from slowctl.drivers.link import InstrumentError, LinkError, LinkSettings
from slowctl.drivers.readings import ChannelState, SupplyChannel
from slowctl.drivers.wire import fixed

STAT_BITS = ("ON", "RUP", "RDW", "OVC", "OVV", "UNV", "MAXV", "TRIP", "OVP", "OVT", "DIS", "KILL", "ILK", "NOCAL")
# bits that mean the channel cannot work as commanded
FAULT_BITS = frozenset({"OVP", "OVT", "DIS", "KILL", "ILK"})

ERRORS = {
    "CMD:ERR": "command not understood (CMD:ERR)",
    "CH:ERR": "bad channel (CH:ERR)",
    "PAR:ERR": "unknown or read-only parameter (PAR:ERR)",
    "VAL:ERR": "value out of range (VAL:ERR)",
    "LOC:ERR": "instrument is in LOCAL mode (LOC:ERR)",
}


class CaenOptions(NoOptions):
    board: int = Field(default=0, ge=0, le=31, description="board address on the chain")
    channels: int = Field(default=4, ge=1, le=16, description="N1470: 4, N1570: 2")
    all_channels_query: bool = Field(
        default=False, description="CH:<channels> reads every channel at once (unconfirmed)"
    )
    pdwn_ramp: str = Field(default="RAMP", description="PDWN value for ramped power-down (unconfirmed spelling)")
    pdwn_kill: str = Field(default="KILL", description="PDWN value for immediate power-down (unconfirmed spelling)")


def channel_state(stat: int) -> tuple[ChannelState, list[str]]:
    bits = [name for i, name in enumerate(STAT_BITS) if stat >> i & 1]
    alarms = [b for b in bits if b not in ("ON", "RUP", "RDW")]
    if "TRIP" in bits:
        state = ChannelState.TRIPPED
    elif FAULT_BITS.intersection(bits):
        state = ChannelState.ERROR
    elif "OVC" in bits and "ON" in bits:
        state = ChannelState.COMPLIANCE  # current-limited; trips after the TRIP time
    elif "RUP" in bits:
        state = ChannelState.RAMP_UP
    elif "RDW" in bits:
        state = ChannelState.RAMP_DOWN
    elif "ON" in bits:
        state = ChannelState.ON
    else:
        state = ChannelState.OFF
    return state, alarms


class CaenN1470(SupplyDriver):
    model = "caen-n1470"
    description = "CAEN N1470 / DT1470ET / DT1471ET high-voltage supply"
    high_voltage = True
    Options = CaenOptions
    hardware_ramp = True
    max_channels = 16
    link_settings = LinkSettings(write_termination="\r\n", read_termination="\r\n", xonxoff=True)

    # ranges and steps of the manual's parameter table (docs/instruments/caen-n1470.md); ISET travels in µA
    vset = ChannelParam("VSET", "V", limits=(0, 8000), resolution=0.1)
    iset = ChannelParam("ISET", "A", scale=1e-6, limits=(0, 3e-3), resolution=0.01e-6)
    rampup = ChannelParam("RUP", "V/s", limits=(1, 500), resolution=1)
    rampdown = ChannelParam("RDW", "V/s", limits=(1, 500), resolution=1)
    vmon = ChannelParam("VMON", "V", readonly=True)
    imon = ChannelParam("IMON", "A", scale=1e-6, readonly=True)
    stat = ChannelParam("STAT", kind=int, readonly=True)

    options: CaenOptions

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._settings: dict[int, dict[str, float]] = {}
        self._off_mode: dict[int, str] = {}  # as configured: kill() restores the power-down mode

    @classmethod
    def channel_count(cls, options: CaenOptions) -> int:  # type: ignore[override]
        return options.channels

    # --- protocol ----------------------------------------------------------
    def _request(self, cmd: str, par: str, channel: int | None = None, value: str | None = None) -> str | None:
        board = f"#BD:{self.options.board:02d},"
        line = f"${board[1:]}CMD:{cmd}," + (f"CH:{channel}," if channel is not None else "") + f"PAR:{par}"
        if value is not None:
            line += f",VAL:{value}"
        reply = self.link.query(line)
        if not reply.startswith(board):
            raise LinkError(f"unexpected reply {reply[:64]!r} to {line!r}")
        body = reply[len(board) :]
        if body == "CMD:OK":
            return None
        if body.startswith("CMD:OK,VAL:"):
            return body[len("CMD:OK,VAL:") :]
        if body in ERRORS:
            raise InstrumentError(f"{par}: {ERRORS[body]}")
        raise LinkError(f"unexpected reply {reply[:64]!r} to {line!r}")

    def _get(self, param: ChannelParam, channel: int) -> str:
        value = self._request("MON", param.command, channel)
        if value is None:
            raise LinkError(f"no value in reply to MON {param.command}")
        return value

    def _set(self, param: ChannelParam, channel: int, value: float) -> None:
        # the manual's fixed decimals (VSET 12.3, ISET 1.23 µA, RUP 20): exact for every value on the grid
        step = (param.resolution or 0.01) / param.scale
        self._request("SET", param.command, channel, fixed(value, step))

    def _get_all(self, param: ChannelParam) -> list:
        """One round trip for every channel (CH:<channels>)."""
        raw = self._get(param, self.options.channels)
        parts = raw.split(";")
        if len(parts) != self.options.channels:
            raise LinkError(f"expected {self.options.channels} values for {param.command}, got {raw!r}")
        return [param.parse(p) for p in parts]

    # --- the framework's view ----------------------------------------------
    def connect(self) -> str:
        name = self._request("MON", "BDNAME")
        serial = self._request("MON", "BDSNUM")
        firmware = self._request("MON", "BDFREL")
        self._settings.clear()
        return f"CAEN {name} serial {serial} firmware {firmware}"

    def configure_channel(self, channel: int, rampup: float | None, rampdown: float | None, off_mode: str) -> None:
        super().configure_channel(channel, rampup, rampdown, off_mode)
        self._off_mode[channel] = off_mode
        pdwn = self.options.pdwn_kill if off_mode == "kill" else self.options.pdwn_ramp
        self._request("SET", "PDWN", channel, pdwn)

    def switch(self, channel: int, on: bool) -> None:
        self._request("SET", "ON" if on else "OFF", channel)

    def kill(self, channel: int) -> None:
        # the power-down mode decides how OFF acts: KILL for this one, then back to the channel's own
        self._request("SET", "PDWN", channel, self.options.pdwn_kill)
        self._request("SET", "OFF", channel)
        if self._off_mode.get(channel, "ramp") != "kill":
            self._request("SET", "PDWN", channel, self.options.pdwn_ramp)

    def clear(self, channel: int) -> None:
        # BDCLR clears the alarms of the whole board: there is no per-channel clear
        self._request("SET", "BDCLR")

    def _read_params(self, params: list[ChannelParam], channels: list[int]) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {ch: {} for ch in channels}
        for p in params:
            if self.options.all_channels_query:
                values = self._get_all(p)
                for ch in channels:
                    out[ch][p.name] = values[ch]
            else:
                for ch in channels:
                    out[ch][p.name] = getattr(self, p.name)[ch]
        return out

    def read(self, channels: list[int], full: bool) -> dict[int, SupplyChannel]:
        settings_params = [CaenN1470.vset, CaenN1470.iset, CaenN1470.rampup, CaenN1470.rampdown]
        stale = [ch for ch in channels if full or ch not in self._settings]
        if stale:
            self._settings.update(self._read_params(settings_params, stale))
        mon = self._read_params([CaenN1470.vmon, CaenN1470.imon, CaenN1470.stat], channels)
        result = {}
        for ch in channels:
            s, m = self._settings[ch], mon[ch]
            state, alarms = channel_state(int(m["stat"]))
            result[ch] = SupplyChannel(
                on=bool(int(m["stat"]) & 1),
                vset=s["vset"],
                vmon=m["vmon"],
                iset=s["iset"],
                imon=m["imon"],
                state=state,
                rampup=s["rampup"],
                rampdown=s["rampdown"],
                alarms=alarms,
            )
        return result
