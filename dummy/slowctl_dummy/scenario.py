"""Scenario files: timed events for a simulator, validated at load time.

Format (YAML)::

    description: free text (optional)
    events:
      - {at: 30, set: {humidity: 80}}              # every channel/sensor
      - {at: 60, channel: 2, set: {load: 1.0e4}}   # one channel
      - {at: 90, silence: 10}                      # no replies for 10 s
      - {at: 120, garbage: 5}                      # garbled replies for 5 s
      - {at: 30, model: climate, set: {humidity: 80}}  # only for that model

``at`` is seconds since simulator start.  Events carrying ``model:`` are only
applied by that simulator, so one file can drive a whole bench.  Every error
names the offending path, e.g. ``events[2].set.humidty: unknown parameter ...``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .base import Event, Instrument

ACTIONS = ("set", "silence", "garbage")
_EVENT_KEYS = ("at", "channel", "model")


class ScenarioError(ValueError):
    """A scenario file is missing, unreadable or invalid."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_set(path: str, values: Any, model: str, params: dict, own: bool) -> dict[str, Any]:
    if not isinstance(values, dict) or not values:
        raise ScenarioError(f"{path}: expected a mapping of parameter: value")
    out = {}
    for name, value in values.items():
        if name not in params:
            expected = ", ".join(sorted(params))
            raise ScenarioError(f"{path}.{name}: unknown parameter for {model} (expected one of {expected})")
        try:
            out[name] = params[name].convert(value) if own else value
        except ValueError as exc:
            raise ScenarioError(f"{path}.{name}: {exc}") from None
    return out


def _parse_event(i: int, raw: Any, inst: Instrument) -> Event | None:
    """Validate one event; returns None for events meant for another model."""
    from .sims import SIMULATORS  # late import: sims import this package's base

    path = f"events[{i}]"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping like {{at: 10, set: {{...}}}}")
    for key in raw:
        if key not in _EVENT_KEYS and key not in ACTIONS:
            raise ScenarioError(f"{path}.{key}: unknown action (expected one of {', '.join(ACTIONS)})")
    model = raw.get("model", inst.model)
    if model not in SIMULATORS:
        raise ScenarioError(f"{path}.model: unknown model {model!r} (expected one of {', '.join(SIMULATORS)})")
    own = model == inst.model
    at = raw.get("at")
    if at is None:
        raise ScenarioError(f"{path}.at: missing (seconds since simulator start)")
    if not _number(at) or at < 0:
        raise ScenarioError(f"{path}.at: expected a number >= 0, got {at!r}")
    actions = [a for a in ACTIONS if a in raw]
    if len(actions) != 1:
        what = "no action" if not actions else f"more than one action ({', '.join(actions)})"
        raise ScenarioError(f"{path}: {what}; expected exactly one of {', '.join(ACTIONS)}")
    action = actions[0]
    channel = raw.get("channel")
    if channel is not None and action != "set":
        raise ScenarioError(f"{path}.channel: only allowed with set")

    if action != "set":
        duration = raw[action]
        if not _number(duration) or duration <= 0:
            raise ScenarioError(f"{path}.{action}: expected a duration in seconds > 0, got {duration!r}")
        return Event(at=float(at), action=action, duration=float(duration)) if own else None

    params = SIMULATORS[model].params
    values = _check_set(f"{path}.set", raw["set"], model, params, own)
    if channel is not None:
        if not isinstance(channel, int) or isinstance(channel, bool):
            raise ScenarioError(f"{path}.channel: expected an integer, got {channel!r}")
        for name in values:
            if not params[name].per_channel:
                raise ScenarioError(f"{path}.set.{name}: board parameter, remove channel")
        chans = inst.channel_numbers
        if own and channel not in chans:
            raise ScenarioError(
                f"{path}.channel: {channel} out of range for {model} (expected {chans[0]}..{chans[-1]})"
            )
    if not own:
        return None
    return Event(at=float(at), action="set", values=values, channel=channel)


def parse_scenario(data: Any, inst: Instrument) -> list[Event]:
    """Validate already-loaded YAML data against ``inst``; return its events."""
    if not isinstance(data, dict):
        raise ScenarioError("scenario: expected a mapping with an 'events' list")
    for key in data:
        if key not in ("events", "description"):
            raise ScenarioError(f"{key}: unknown top-level key (expected events, description)")
    raw_events = data.get("events")
    if not isinstance(raw_events, list):
        raise ScenarioError("events: expected a list of events")
    events = [_parse_event(i, raw, inst) for i, raw in enumerate(raw_events)]
    return [e for e in events if e is not None]


def bundled_scenarios() -> list[str]:
    """Names of the example scenarios shipped in ``slowctl_dummy/scenarios``."""
    folder = resources.files("slowctl_dummy") / "scenarios"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve(name: str) -> Path:
    """A path as given, or the name of a bundled scenario (with or without .yaml)."""
    path = Path(name)
    if path.exists():
        return path
    fname = name if name.endswith(".yaml") else f"{name}.yaml"
    bundled = Path(str(resources.files("slowctl_dummy") / "scenarios" / fname))
    if "/" not in name and bundled.exists():
        return bundled
    raise ScenarioError(f"scenario file not found: {name} (bundled: {', '.join(bundled_scenarios())})")


def load_scenario(name: str | Path, inst: Instrument) -> list[Event]:
    """Read, validate and return the events of a scenario file for ``inst``."""
    path = resolve(str(name))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: invalid YAML: {exc}") from None
    try:
        return parse_scenario(data, inst)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
