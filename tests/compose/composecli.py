"""The compose files as the real `docker compose` (v2, built from source: tests/tools.py) renders them.

`docker compose config` needs no engine: it loads, merges and interpolates the files exactly as `up` would.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from tests.tools import REPO, tool

SCHEMA = REPO.parent / "shared" / "schemas" / "compose-spec.json"
FILES = {"prod": "docker-compose.yml", "dev": "docker-compose.dev.yml", "dummy": "docker-compose.dummy.yml"}
PROJECT = "slowctl"


class ComposeError(Exception):
    """`docker compose config` refused the files; the message is its own."""


def render(*names: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The merged model of these files (FILES keys, in order). With `env` (a .env's variables): interpolated
    as `up` would; without: merged only, the variables left as written (`--no-interpolate`)."""
    files = [arg for name in names for arg in ("-f", str(REPO / FILES[name]))]
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in (env or {}).items()))
        cmd = [str(tool("compose")), "-p", PROJECT, "--project-directory", str(REPO), "--env-file", str(env_file)]
        cmd += [*files, "config", "--format", "json", *(() if env is not None else ("--no-interpolate",))]
        # only the .env decides: a variable of the test process's environment must not leak in
        r = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    if r.returncode != 0:
        raise ComposeError(r.stderr.strip())
    return json.loads(r.stdout)


class _TaggedLoader(yaml.SafeLoader):
    """A compose file as plain YAML: `!reset` / `!override` values kept as written (for the schema)."""


def _as_written(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    _TaggedLoader.add_constructor(_tag, _as_written)


def raw(name: str) -> dict[str, Any]:
    """One file as written, before compose reads it."""
    return yaml.load((REPO / FILES[name]).read_text(), Loader=_TaggedLoader)


_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")


def variables(text: str) -> set[str]:
    """The variables a text refers to (`${VAR}`, `${VAR:-x}`, `$VAR`; `$$` is no variable)."""
    return {m.group(1) or m.group(2) for m in _VAR.finditer(text) if m.group(0) != "$$"}
