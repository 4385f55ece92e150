"""Compose files as `docker compose` reads them: YAML with !reset/!override, interpolation, merge.

No Docker engine runs on the test machines, so the tests load, interpolate and
merge the files here, following the Compose Specification's rules for the
parts our files use, and validate the result against the official schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "schemas" / "compose-spec.json"
FILES = {"prod": "docker-compose.yml", "dev": "docker-compose.dev.yml", "dummy": "docker-compose.dummy.yml"}


class Reset:
    """`!reset`: the value is removed from the merged model."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Override:
    """`!override`: the value replaces the base one instead of being merged."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Loader(yaml.SafeLoader):
    pass


def _tagged(cls):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return cls(loader.construct_mapping(node, deep=True))
        if isinstance(node, yaml.SequenceNode):
            return cls(loader.construct_sequence(node, deep=True))
        return cls(loader.construct_scalar(node))

    return construct


Loader.add_constructor("!reset", _tagged(Reset))
Loader.add_constructor("!override", _tagged(Override))


def load(name: str) -> dict:
    return yaml.load((REPO / FILES.get(name, name)).read_text(), Loader=Loader)


def plain(value: Any) -> Any:
    """The file as the schema sees it on its own: tags resolved to their values."""
    if isinstance(value, (Reset, Override)):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# --- merge (Compose Specification, "Merge and override") ---------------------------------------
# sequences merged by a key; others listed here are replaced; remaining sequences are appended
_BY_TARGET = {"volumes", "devices", "secrets", "configs"}
_REPLACED = {"command", "entrypoint", "test"}
_UNIQUE = {
    "ports",
    "expose",
    "dns",
    "dns_search",
    "tmpfs",
    "group_add",
    "cap_add",
    "cap_drop",
    "security_opt",
    "profiles",
    "networks",
}


def _env_map(value: Any) -> Any:
    if isinstance(value, list):  # KEY=VALUE list form
        return {item.split("=", 1)[0]: (item.split("=", 1)[1] if "=" in item else None) for item in value}
    return value


def _target(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("target"))
    parts = str(entry).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge(base: Any, over: Any, key: str = "") -> Any:
    if isinstance(over, Reset):
        return Reset(None)
    if isinstance(over, Override):
        return plain(over.value)
    if key in ("environment", "labels", "depends_on") or isinstance(base, dict) and isinstance(over, dict):
        base, over = _env_map(base) or {}, _env_map(over) or {}
        if key == "depends_on":
            base = {k: {"condition": "service_started"} for k in base} if isinstance(base, list) else base
            over = {k: {"condition": "service_started"} for k in over} if isinstance(over, list) else over
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else (v if isinstance(v, Reset) else plain(v))
        return {k: v for k, v in out.items() if not isinstance(v, Reset)}
    if isinstance(base, list) and isinstance(over, list):
        if key in _REPLACED:
            return plain(over)
        if key in _BY_TARGET:
            merged = {_target(e): e for e in base}
            merged.update({_target(e): e for e in plain(over)})
            return list(merged.values())
        if key in _UNIQUE:
            return base + [e for e in plain(over) if e not in base]
        return base + plain(over)
    return plain(over)


def merged(*names: str) -> dict:
    model = plain(load(names[0]))
    for name in names[1:]:
        model = merge(model, load(name))
    return model


# --- interpolation -----------------------------------------------------------------------------
_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class InterpolationError(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        have = env.get(name)
        unset_or_empty = not have if op and op.startswith(":") else have is None
        if op in (":-", "-"):
            return arg if unset_or_empty else have
        if op in (":+", "+"):  # the replacement only where the variable is set (and, with ":", not empty)
            return "" if unset_or_empty else arg
        if op in (":?", "?"):
            if unset_or_empty:
                raise InterpolationError(f"{name}: {arg}")
            return have
        return have or ""

    return _VAR.sub(sub, value)


def variables(text: str) -> set[str]:
    return {m.group(1) or m.group(4) for m in _VAR.finditer(text) if m.group(0) != "$$"}
