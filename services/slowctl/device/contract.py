"""The MQTT contract in code: topics, device states, payload limits (actions: capabilities.py).

docs/mqtt.md describes the same contract for people; Telegraf, Grafana and
Node-RED consume it unchanged, so changes here are breaking changes.
"""

from __future__ import annotations

import enum
import re

MAX_PAYLOAD = 64 * 1024  # bytes; larger command payloads are refused

# Who sent a command is the broker's word, not the sender's: commands go to <root>/<target>/by/<login>/cmd
# and the ACL lets each login publish under its own name only (docs/records.md).
LOGIN = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
SHARED_LOGIN = "operator"  # the only login the ACL lets publish on the plain <root>/<target>/cmd topics
# trusted to say for whom they act ("for" in the command); the interlock process for an emergency off's requester
FRONTENDS = ("nodered", "procedures", "interlock")


class CommandTopics:
    """The command topics of one target (a device, `alarms`, `interlock`): plain and per login."""

    def __init__(self, root: str, target: str) -> None:
        self.target = target
        self.base = f"{root}/{target}"
        self.cmd = f"{self.base}/cmd"
        # `x/#` matches x as well: these two cover cmd, cmd/<action>/<ch>, by/<login>/cmd and below it
        self.filters = (f"{self.cmd}/#", f"{self.base}/by/+/cmd/#")

    def of(self, login: str | None) -> str:
        """Where `login` publishes its commands (the plain topic for the shared login or None)."""
        return self.cmd if login in (None, SHARED_LOGIN) else f"{self.base}/by/{login}/cmd"

    def sender(self, topic: str) -> tuple[str, list[str]] | None:
        """(login, levels below cmd) of a command topic of this target; None if it is not one."""
        if topic == self.cmd or topic.startswith(self.cmd + "/"):
            return SHARED_LOGIN, _levels(topic[len(self.cmd) :])
        head = self.base + "/by/"
        if not topic.startswith(head):
            return None
        login, _, rest = topic[len(head) :].partition("/")
        if not (rest == "cmd" or rest.startswith("cmd/")):
            return None
        return login, _levels(rest[3:])


def _levels(rest: str) -> list[str]:
    return rest[1:].split("/") if rest else []


class DeviceState(str, enum.Enum):
    OK = "ok"
    DISCONNECTED = "disconnected"
    ERROR = "error"


class Topics:
    """All topic names of one device, derived from the root in one place."""

    def __init__(self, root: str, device: str) -> None:
        base = f"{root}/{device}"
        self.base = base
        self.availability = f"{base}/availability"
        self.status = f"{base}/status"
        self.metrics = f"{base}/metrics"
        self.health = f"{base}/health"
        self.reply = f"{base}/reply"
        self.cmd = f"{base}/cmd"
        self.commands = CommandTopics(root, device)
        self.event = f"{base}/event"
        self.capabilities = f"{base}/capabilities"

    def owns_response_topic(self, topic: str) -> bool:
        """MQTT v5 response topics must stay in the device's own reply tree (ACL) and be publishable."""
        return in_reply_tree(self.reply, topic)


class LegacyTopics:
    """tracker_dcs topics: /<name>/status and /<name>/cmd/{setv,switch}/<ch>."""

    def __init__(self, name: str) -> None:
        self.status = f"/{name}/status"
        self.setv = f"/{name}/cmd/setv/+"
        self.switch = f"/{name}/cmd/switch/+"


class InterlockTopics:
    """The interlock process's topics: retained state of every rule, availability (last will), events."""

    def __init__(self, root: str) -> None:
        base = f"{root}/interlock"
        self.state = f"{base}/state"
        self.availability = f"{base}/availability"
        self.event = f"{base}/event"
        self.rules = f"{base}/rules"  # retained, one topic per rule
        self.cmd = f"{base}/cmd"  # operators: {"action": "clear", "rule": ...}
        self.commands = CommandTopics(root, "interlock")
        self.reply = f"{base}/reply"


class ProcedureTopics:
    """The procedure runner's topics (docs/procedures.md): retained catalog, active runs and each run's
    progress; availability (last will); events; `start` / `abort` commands and their replies."""

    def __init__(self, root: str) -> None:
        base = f"{root}/procedures"
        self.base = base
        self.availability = f"{base}/availability"
        self.catalog = f"{base}/catalog"  # retained: every procedure with its parameters
        self.state = f"{base}/state"  # retained: the active runs and the channels they hold
        self.progress_root = f"{base}/progress"  # retained per run: <root>/procedures/progress/<run>
        self.event = f"{base}/event"
        self.reply = f"{base}/reply"
        self.commands = CommandTopics(root, "procedures")

    def progress(self, run: str) -> str:
        return f"{self.progress_root}/{run}"

    def owns_response_topic(self, topic: str) -> bool:
        return in_reply_tree(self.reply, topic)


class AlarmTopics:
    """The alarm handler's topics (it runs in the interlock process): the retained list, events, `ack`."""

    def __init__(self, root: str) -> None:
        base = f"{root}/alarms"
        self.summary = f"{base}/summary"  # retained: every active or unacknowledged alarm
        self.event = f"{base}/event"
        self.cmd = f"{base}/cmd"  # operators: {"action": "ack", "device": ..., "channel": ..., "kind": ...}
        self.commands = CommandTopics(root, "alarms")
        self.reply = f"{base}/reply"


class RecorderTopics:
    """The recorder's topics: availability (last will), health, and the record read back (read-only
    queries on its command topics, answered on reply/<...>: docs/records.md)."""

    def __init__(self, root: str) -> None:
        base = f"{root}/recorder"
        self.base = base
        self.availability = f"{base}/availability"
        self.health = f"{base}/health"
        self.reply = f"{base}/reply"
        self.commands = CommandTopics(root, "recorder")

    def owns_response_topic(self, topic: str) -> bool:
        return in_reply_tree(self.reply, topic)


def in_reply_tree(reply: str, topic: str) -> bool:
    """A response topic a service may publish on: its reply topic or below it, no wildcards."""
    if any(c in topic for c in "+#\0"):
        return False
    return topic == reply or topic.startswith(reply + "/")
