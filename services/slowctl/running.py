"""Where the running native stacks are, so that `slowctl` finds one from any working directory.

`slowctl up` writes <state_dir>/stack.json and registers the state directory in a per-user directory
($SLOWCTL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/slowctl, else ~/.local/state/slowctl/running) while it runs;
it removes both when it stops. A client uses ./.slowctl when a stack runs there, else the one registered.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

LOCAL = Path(".slowctl")


class NotRunning(Exception):
    """No running native stack where one was looked for; the message says where and what to do."""


def runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("SLOWCTL_RUNTIME_DIR"):
        return Path(env["SLOWCTL_RUNTIME_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "slowctl"
    return Path.home() / ".local" / "state" / "slowctl" / "running"


def _entry(state_dir: Path) -> Path:
    key = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return runtime_dir() / f"{key}.json"


def register(state_dir: Path, pid: int) -> None:
    path = _entry(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state_dir": str(state_dir.resolve()), "pid": pid}))


def unregister(state_dir: Path) -> None:
    _entry(state_dir).unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """True while `pid` is a slowctl process (a dead stack's number may be another program's by now)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours, but it exists
    try:
        return b"slowctl" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: the signal test is all there is


def check(state_dir: Path) -> Path:
    """`state_dir` if its stack runs; NotRunning saying it never ran there or has stopped."""
    info = state_dir / "stack.json"
    try:
        pid = int(json.loads(info.read_text())["pid"])
    except FileNotFoundError:
        if (state_dir / "credentials.json").exists():  # a stack has run here
            raise NotRunning(f"the native stack in {state_dir} has stopped (start it again with: slowctl up)") from None
        raise NotRunning(f"no running native stack in {state_dir} (start one with: slowctl up --dummy)") from None
    except (ValueError, KeyError, TypeError):
        raise NotRunning(f"{info} is unreadable: is a `slowctl up` of another version running there?") from None
    if not alive(pid):
        raise NotRunning(
            f"the native stack in {state_dir} has stopped (its slowctl up, process {pid}, is gone without "
            "cleaning up; start it again with: slowctl up)"
        )
    return state_dir


def find(explicit: Path | None = None) -> Path:
    """The state directory of the running native stack: `explicit`, else ./.slowctl when its stack runs,
    else the one registered (NotRunning when none or several are, or when it has stopped; also when
    ./.slowctl holds a stack that has stopped: a command must not go to another bench unasked)."""
    if explicit is not None:
        return check(explicit)
    if (LOCAL / "stack.json").exists():
        return check(LOCAL)
    entries = []
    for path in sorted(runtime_dir().glob("*.json")):
        try:
            data = json.loads(path.read_text())
            entries.append((Path(data["state_dir"]), int(data["pid"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
    running = [d for d, pid in entries if alive(pid) and (d / "stack.json").exists()]
    if (LOCAL / "credentials.json").exists():  # this directory's own stack, stopped: never another one silently
        elsewhere = (
            f"; running: {', '.join(map(str, running))} (--state-dir DIR)"
            if running
            else " (start it again with: slowctl up)"
        )
        raise NotRunning(f"the native stack in {LOCAL.resolve()} has stopped{elsewhere}")
    if len(running) > 1:
        raise NotRunning(
            f"{len(running)} native stacks are running ({', '.join(map(str, running))}): "
            "choose one with --state-dir DIR, or run slowctl in the directory it was started in"
        )
    if running:
        return running[0]
    if entries:  # all stale: killed without cleaning up
        return check(entries[0][0])
    raise NotRunning(
        f"no running native stack: none in {LOCAL.resolve()}, none registered in {runtime_dir()} "
        "(start one with: slowctl up --dummy)"
    )
