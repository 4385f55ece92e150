"""Stack configuration: typed, validated at load, errors name the bad key.

One YAML file describes the broker connection, every device with its channel
limits, and (for the native stack) the supervisor and simulators.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slowctl.drivers import DRIVERS
from slowctl.drivers.actions import LIMIT_KEY, RATES
from slowctl.drivers.base import Driver, off_grid
from slowctl.safety.alarms import AlarmConfig, limit_errors
from slowctl.safety.rules import READINGS, RULE_KINDS, RULE_NAME, Rule, device_shapes, reference_errors

# no '-': a device's broker password is MQTT_PASSWORD_<ID IN CAPITALS> in the compose .env
DEVICE_ID = re.compile(r"[a-z][a-z0-9_]{0,31}")  # always used with fullmatch
# a device id is also a broker user name and a control UI page: the roles' users
# (mosquitto/acl) and the UI's own pages are taken
RESERVED_IDS = (
    "viewer",
    "operator",
    "nodered",
    "telegraf",
    "interlock",
    "recorder",
    "procedures",
    "alarms",
    "environment",
    "health",
    "dashboard",
)


class ConfigError(Exception):
    """A config file that cannot be used; `errors` holds one 'path: message' per problem."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = errors
        self.source = source
        super().__init__(f"{source}: " + "; ".join(errors))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _finite(v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class StartupSettings(Strict):
    """Applied when the service connects, only to a channel whose output is off; never switches an output."""

    vset: float | None = Field(default=None, ge=0, description="V")
    iset: float | None = Field(default=None, ge=0, description="A")

    _finite_fields = field_validator("vset", "iset")(_finite)


class ChannelConfig(Strict):
    name: str = Field(min_length=1, max_length=64)
    vmax: float | None = Field(default=None, ge=0, description="highest accepted vset (V)")
    imax: float | None = Field(default=None, ge=0, description="highest accepted iset (A)")
    ramp_max: float | None = Field(default=None, gt=0, description="highest accepted ramp rate (V/s)")
    rampup: float | None = Field(default=None, gt=0, description="ramp-up rate applied at start (V/s)")
    rampdown: float | None = Field(default=None, gt=0, description="ramp-down rate applied at start (V/s)")
    ramp_step: float | None = Field(
        default=None, gt=0, description="software ramp: largest step (V), held for ramp_step / rate seconds"
    )
    off_mode: Literal["ramp", "kill"] = "ramp"
    tmin: float | None = Field(default=None, description="lowest accepted tset (°C, chillers)")
    tmax: float | None = Field(default=None, description="highest accepted tset (°C, chillers)")
    startup: StartupSettings | None = Field(default=None, description="settings applied at start while off")

    _finite_fields = field_validator("vmax", "imax", "ramp_max", "rampup", "rampdown", "ramp_step", "tmin", "tmax")(
        _finite
    )

    @model_validator(mode="after")
    def _rates_within_max(self) -> ChannelConfig:
        for key in RATES:
            rate, top = getattr(self, key), getattr(self, LIMIT_KEY[key])
            if rate is not None and top is not None and rate > top:
                raise ValueError(f"{key} {rate} exceeds {LIMIT_KEY[key]} {top}")
        if self.tmin is not None and self.tmax is not None and self.tmin > self.tmax:
            raise ValueError(f"tmin {self.tmin} is above tmax {self.tmax}")
        if self.startup is not None:
            for key in StartupSettings.model_fields:
                limit = LIMIT_KEY[key]
                value, top = getattr(self.startup, key), getattr(self, limit)
                if value is not None and top is not None and value > top:
                    raise ValueError(f"startup.{key} {value:g} exceeds {limit} {top:g}")
        return self


class SerialConfig(Strict):
    """Serial line settings; a key left out keeps the driver's default for its instrument."""

    baudrate: int | None = Field(default=None, gt=0)
    bytesize: Literal[5, 6, 7, 8] | None = None
    parity: Literal["N", "E", "O", "M", "S"] | None = None
    stopbits: float | None = Field(default=None, description="1, 1.5 or 2")
    xonxoff: bool | None = None
    rtscts: bool | None = None

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float | None) -> float | None:
        if v is not None and v not in (1, 1.5, 2):
            raise ValueError("Input should be 1, 1.5 or 2")
        return v


class LinkConfig(Strict):
    """Line protocol settings; a key left out keeps the driver's default for its instrument."""

    write_termination: str | None = Field(default=None, min_length=1, max_length=2)
    read_termination: str | None = Field(default=None, min_length=1, max_length=2)
    echo: bool | None = Field(default=None, description="the instrument echoes each request line")
    min_interval: float | None = Field(default=None, ge=0, le=10, description="quiet time between requests (s)")


class SimulatorConfig(Strict):
    """How `slowctl up --dummy` simulates this device (ignored without --dummy)."""

    port: int = Field(ge=1, le=65535)
    scenario: str | None = None
    baud: int | None = Field(default=None, gt=0)
    args: list[str] = Field(default_factory=list)


class DeviceConfig(Strict):
    model: str
    address: str = Field(min_length=1, description="serial path, pyserial URL or VISA resource")
    serial: SerialConfig = SerialConfig()
    link: LinkConfig = LinkConfig()
    visa_library: str = Field(default="@py", description="pyvisa library, e.g. @py or file.yaml@sim")
    timeout: float = Field(default=1.0, gt=0, le=30)
    poll_period: float = Field(default=1.0, ge=0.05, le=3600)
    full_read_every: int = Field(default=10, ge=1, description="re-read set values every N polls")
    max_command_age: float = Field(default=10.0, gt=0, le=3600, description="older commands are refused (s)")
    reconnect_max: float = Field(default=10.0, gt=0, le=600, description="cap of the instrument reconnect backoff (s)")
    outbox_max_mb: float = Field(
        default=50.0,
        gt=0,
        le=100_000,
        description="MiB on disk for the metrics and events kept while the broker is away (the outbox)",
    )
    legacy_name: str | None = None
    channels: dict[int, ChannelConfig]
    options: dict[str, Any] = Field(default_factory=dict)
    simulator: SimulatorConfig | None = None

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: dict[int, ChannelConfig]) -> dict[int, ChannelConfig]:
        if not v:
            raise ValueError("at least one channel is needed")
        bad = [c for c in v if c < 0]
        if bad:
            raise ValueError(f"channel numbers must be >= 0, got {bad}")
        return v

    @field_validator("legacy_name")
    @classmethod
    def _legacy(cls, v: str | None) -> str | None:
        if v is not None and not DEVICE_ID.fullmatch(v):
            raise ValueError("must match [a-z][a-z0-9_]*")
        return v


class MqttConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_root: str = Field(default="slowctl", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    keepalive: int = Field(default=10, ge=2, le=3600, description="s; the last will fires after 1.5x")
    reconnect_min: float = Field(default=0.1, gt=0, le=60)
    reconnect_max: float = Field(default=2.0, gt=0, le=600)
    tls_ca: str | None = Field(default=None, description="CA file; enables TLS")


class SupervisorConfig(Strict):
    max_restarts: int = Field(default=5, ge=0, description="restarts allowed within `window`")
    window: float = Field(default=60.0, gt=0, le=86400)
    backoff_initial: float = Field(default=0.5, gt=0, le=3600)
    backoff_max: float = Field(default=10.0, gt=0, le=3600)


def _distinct(model: BaseModel, *keys: str) -> BaseModel:
    """Listeners of one server need ports of their own."""
    ports = [getattr(model, k) for k in keys]
    if len(set(ports)) != len(ports):
        raise ValueError(f"{', '.join(keys[:-1])} and {keys[-1]} must differ, got {ports}")
    return model


class BrokerConfig(Strict):
    """The native stack's own Mosquitto."""

    bind: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls_port: int = Field(default=8883, ge=1, le=65535, description="MQTT over TLS")
    websockets_port: int = Field(default=9001, ge=1, le=65535, description="MQTT over websockets, for the gateway")

    _distinct_ports = model_validator(mode="after")(lambda self: _distinct(self, "port", "tls_port", "websockets_port"))


class UiConfig(Strict):
    """The native stack's control UI: Node-RED (loopback) behind the nginx gateway (docs/control-ui.md)."""

    enabled: bool = Field(default=True, description="start Node-RED and the gateway when they are installed")
    hostname: str = Field(
        default="localhost",
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9.:-]+$",
        description="host name in the browser; goes into the server certificate",
    )
    bind: str = Field(default="127.0.0.1", description="gateway listen address")
    https_port: int = Field(default=8443, ge=1, le=65535)
    http_port: int = Field(default=8080, ge=1, le=65535, description="redirects to https_port")
    nodered_port: int = Field(default=1880, ge=1, le=65535, description="Node-RED, on 127.0.0.1 only")
    grafana: str = Field(
        default="127.0.0.1:3000",
        pattern=r"^[A-Za-z0-9.\[\]:-]+:[0-9]{1,5}$",
        description="host:port behind https://<host>/grafana/ (the native stack has none)",
    )

    _distinct_ports = model_validator(mode="after")(
        lambda self: _distinct(self, "https_port", "http_port", "nodered_port")
    )


class RecordsConfig(Strict):
    """The recorder: every command, reply and event into MongoDB (docs/records.md)."""

    enabled: bool = Field(default=True, description="natively: run the recorder when a MongoDB-wire server is found")
    mongo_port: int = Field(default=27018, ge=1, le=65535, description="natively: port of the FerretDB it starts")
    retention_days: int = Field(
        default=730, ge=0, description="commands and events older than this are deleted (0: kept forever)"
    )
    buffer_mb: float = Field(
        default=256, gt=0, le=65536, description="on-disk buffer while MongoDB is unreachable (MB)"
    )
    buffer_warn: float = Field(default=0.8, gt=0, lt=1, description="fill of the buffer that raises an alarm")


READING = re.compile(r"^([a-z][a-z0-9_]{0,31})\.(\d{1,3})\.([a-z_]{1,32})$")


class ProceduresConfig(Strict):
    """The procedure runner (docs/procedures.md)."""

    enabled: bool = Field(default=True, description="natively: run the procedure runner")
    paths: list[str] = Field(
        default_factory=list, description="directories of procedure files (*.py), relative to this config file"
    )
    environment: list[str] = Field(
        default_factory=list, description="readings recorded with every data point, as device.channel.reading"
    )
    buffer_mb: float = Field(default=50.0, gt=0, le=10000, description="results journal on disk while MongoDB is away")
    safe_wait: float = Field(
        default=300.0, ge=0, le=3600, description="s a run's end waits for the broker to bring its channels to safety"
    )

    @field_validator("environment")
    @classmethod
    def _readings(cls, v: list[str]) -> list[str]:
        for i, reading in enumerate(v):
            if not READING.match(reading):
                raise ValueError(f"[{i}] {reading!r}: expected device.channel.reading (climate.0.humidity)")
        return v


class StackConfig(Strict):
    mqtt: MqttConfig = MqttConfig()
    broker: BrokerConfig = BrokerConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    ui: UiConfig = UiConfig()
    state_dir: str = ".slowctl"
    devices: dict[str, DeviceConfig]
    interlocks: dict[Annotated[str, Field(pattern=RULE_NAME)], Rule] = Field(
        default_factory=dict, description="interlock rules by name (docs/safety.md)"
    )
    alarms: AlarmConfig = Field(default_factory=AlarmConfig, description="alarm limits on readings (docs/safety.md)")
    records: RecordsConfig = Field(default_factory=RecordsConfig, description="the recorder (docs/records.md)")
    procedures: ProceduresConfig = Field(
        default_factory=ProceduresConfig, description="the procedure runner (docs/procedures.md)"
    )

    def resolved_dir(self, base: Path) -> Path:
        p = Path(self.state_dir)
        return p if p.is_absolute() else (base / p)


def _environment_errors(readings: list[str], shapes: dict[str, tuple[str, list[int]]]) -> list[str]:
    """procedures.environment: each reading of a configured channel that reports it."""
    errors = []
    for i, reading in enumerate(readings):
        m = READING.match(reading)
        if m is None:
            continue  # said by the field validator
        dev, ch, what = m.group(1), int(m.group(2)), m.group(3)
        where = f"procedures.environment[{i}]"
        if dev not in shapes:
            errors.append(f"{where}: no device {dev!r} (devices: {', '.join(shapes)})")
        elif ch not in shapes[dev][1]:
            errors.append(f"{where}: {dev} has no channel {ch} (configured: {', '.join(map(str, shapes[dev][1]))})")
        elif what not in READINGS[shapes[dev][0]]:
            errors.append(
                f"{where}: {dev} does not report {what!r} (it reports: {', '.join(READINGS[shapes[dev][0]])})"
            )
    return errors


def _format_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        if loc[:1] == ["interlocks"] and len(loc) > 2 and loc[2] in RULE_KINDS:
            del loc[2]  # the rule's `kind` tag is not a key of the file
        path = ".".join(str(p) for p in loc) or "top level"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            msg = f"kind must be one of {', '.join(RULE_KINDS)}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{path}: {msg}")
    return out


def _device_errors(dev_id: str, raw: Any) -> list[str]:
    """Checks that need the driver: model, options, channels against the instrument.

    Each part is checked on its own so that one bad field does not hide the others.
    """
    where = f"devices.{dev_id}"
    errors = (
        [] if DEVICE_ID.fullmatch(str(dev_id)) else [f"{where}: device id must match [a-z][a-z0-9_]* (max 32 chars)"]
    )
    if dev_id in RESERVED_IDS:
        errors.append(
            f"{where}: device id {dev_id!r} is reserved for a broker role or a UI page ({', '.join(RESERVED_IDS)})"
        )
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
        return errors
    driver = DRIVERS.get(raw["model"])
    if driver is None:
        return errors + [f"{where}.model: unknown model {raw['model']!r} (known: {', '.join(sorted(DRIVERS))})"]
    channels: dict[int, Any] = {}  # ChannelConfig, as the drivers' ChannelLimits
    for ch, ch_raw in (raw.get("channels") or {}).items() if isinstance(raw.get("channels"), dict) else ():
        try:
            channels[int(ch)] = ChannelConfig.model_validate(ch_raw)
        except (ValidationError, ValueError, TypeError):
            pass  # reported by the whole-config validation
    options = raw.get("options") or {}
    options = options if isinstance(options, dict) else {}
    errors += [f"{where}.{e}" for e in driver.check_config(options, channels)]
    return errors + [f"{where}.{e}" for e in _startup_errors(driver, options, channels)]


def _startup_errors(driver: type[Driver], options: dict[str, Any], channels: dict[int, ChannelConfig]) -> list[str]:
    """Start-up settings the instrument could not hold exactly: refused at load, never rounded later."""
    try:
        opts = driver.parse_options(options)
    except ValidationError:
        return []  # reported by check_config
    errors = []
    for ch, cfg in channels.items():
        for key in StartupSettings.model_fields:
            value = getattr(cfg.startup, key) if cfg.startup else None
            if value is None:
                continue
            if key not in driver.actions():
                errors.append(f"channels.{ch}.startup.{key}: {driver.model} has no {key}")
                continue
            limits, step = driver.instrument_limits(key, opts), driver.instrument_step(key, opts)
            if limits and not limits[0] <= value <= limits[1]:
                errors.append(
                    f"channels.{ch}.startup.{key}: {value:g} outside the {driver.model} range "
                    f"{limits[0]:g}..{limits[1]:g}"
                )
            elif step and off_grid(value, step):
                errors.append(
                    f"channels.{ch}.startup.{key}: {value:g} is finer than the {driver.model}'s {step:g} step"
                )
    return errors


def _shared_ports(stack: StackConfig) -> list[str]:
    """The native stack listens on all of these at once (loopback): two on one port cannot both start."""
    listeners = {
        "broker.port": stack.broker.port,
        "broker.tls_port": stack.broker.tls_port,
        "broker.websockets_port": stack.broker.websockets_port,
    }
    if stack.ui.enabled:
        listeners |= {f"ui.{k}": getattr(stack.ui, k) for k in ("https_port", "http_port", "nodered_port")}
    errors = []
    for dev_id, dev in stack.devices.items():
        if dev.simulator is not None:
            key = f"devices.{dev_id}.simulator.port"
            other = next((k for k, port in listeners.items() if port == dev.simulator.port), None)
            if other:
                errors.append(f"{key}: {dev.simulator.port} is also {other}")
            listeners[key] = dev.simulator.port
    return errors


def parse_config(data: Any, source: str = "config") -> StackConfig:
    if not isinstance(data, dict):
        raise ConfigError(["top level: expected a mapping"], source)
    errors: list[str] = []
    stack = None
    try:
        stack = StackConfig.model_validate(data)
    except ValidationError as exc:
        errors += _format_errors(exc)
    devices = data.get("devices")
    if isinstance(devices, dict):
        for dev_id, raw in devices.items():
            errors += _device_errors(dev_id, raw)
            name = raw.get("legacy_name") if isinstance(raw, dict) else None
            if isinstance(name, str) and name != dev_id and DEVICE_ID.fullmatch(name):
                # the broker ACL lets a device publish /<its id>/status only
                errors.append(f"devices.{dev_id}.legacy_name: must equal the device id {dev_id!r}, got {name!r}")
    if stack is not None and not errors:
        shapes = device_shapes(stack.devices)
        errors += reference_errors(stack.interlocks, shapes) + limit_errors(stack.alarms, shapes)
        errors += _environment_errors(stack.procedures.environment, shapes)
        errors += _shared_ports(stack)
    if errors or stack is None:
        raise ConfigError(errors, source)
    return stack


def load_config(path: str | Path) -> StackConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        raise ConfigError([f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})"], str(path)) from None
    return parse_config(data, str(path))
