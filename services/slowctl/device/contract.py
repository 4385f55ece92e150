"""The MQTT contract in code: topics, device states, payload limits (actions: capabilities.py).

docs/mqtt.md describes the same contract for people; Telegraf, Grafana and
Node-RED consume it unchanged, so changes here are breaking changes.
"""

from __future__ import annotations

import enum

MAX_PAYLOAD = 64 * 1024  # bytes; larger command payloads are refused


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
        self.event = f"{base}/event"
        self.capabilities = f"{base}/capabilities"

    def owns_response_topic(self, topic: str) -> bool:
        """MQTT v5 response topics must stay in the device's own reply tree (ACL) and be publishable."""
        if any(c in topic for c in "+#\0"):
            return False
        return topic == self.reply or topic.startswith(self.reply + "/")


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
        self.reply = f"{base}/reply"


class AlarmTopics:
    """The alarm handler's topics (it runs in the interlock process): the retained list, events, `ack`."""

    def __init__(self, root: str) -> None:
        base = f"{root}/alarms"
        self.summary = f"{base}/summary"  # retained: every active or unacknowledged alarm
        self.event = f"{base}/event"
        self.cmd = f"{base}/cmd"  # operators: {"action": "ack", "device": ..., "channel": ..., "kind": ...}
        self.reply = f"{base}/reply"
