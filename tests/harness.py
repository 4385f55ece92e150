"""Test harness: a real native dummy stack on free loopback ports, and an MQTT probe client."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[1]
DUMMY_CONFIG = REPO / "config" / "bench.yaml"


def die_with_parent() -> None:
    """Runs in the child: SIGTERM when the test process dies, so a killed test run leaves nothing behind."""
    from slowctl.stack.supervisor import set_parent_death_signal

    set_parent_death_signal()


def stop_process(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM, and SIGKILL when it does not end in time; nothing when it has already ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: the sockets stay bound until all are chosen (one at a time, the kernel may
    hand out the same port twice, and a simulator would then find the broker on its port)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Probe:
    """An MQTT v5 client as a user would have it: subscribe, publish, wait for messages."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        transport: str = "tcp",
        tls_ca: str | None = None,
        ws_path: str = "/mqtt",
    ) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.last: dict[str, mqtt.MQTTMessage] = {}
        self._lock = threading.Lock()
        self._seen: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
            transport=transport,
        )
        if transport == "websockets":
            self.client.ws_set_options(path=ws_path)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)  # verifies the chain and the host name
        if username:
            self.client.username_pw_set(username, password)
        self.connack: Any = None
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self.connack = reason
        self._connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.last[msg.topic] = msg
            self._seen.append(msg)

    def wait_connected(self, timeout: float = 5.0) -> Any:
        assert self._connected.wait(timeout), "no CONNACK"
        return self.connack

    def subscribe(self, *topics: str) -> list:
        """Subscribe and wait for the SUBACK; returns the reason codes."""
        done = threading.Event()
        codes: list = []

        def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
            codes.extend(reason_codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe([(t, 1) for t in topics])
        assert done.wait(5), "no SUBACK"
        return codes

    def publish(
        self,
        topic: str,
        payload: str | bytes | None,
        retain: bool = False,
        qos: int = 1,
        properties: Properties | None = None,
    ) -> Any:
        """Publish and return the PUBACK reason code (MQTT v5 reports ACL refusals there)."""
        acked = threading.Event()
        result: list = []

        def on_publish(client, userdata, mid, reason_code, properties) -> None:
            result.append(reason_code)
            acked.set()

        self.client.on_publish = on_publish
        self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0:
            return None
        assert acked.wait(5), f"no PUBACK for {topic}"
        return result[0]

    def seen(self, topic: str | None = None) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self._seen if topic is None or mqtt.topic_matches_sub(topic, m.topic)]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def wait_message(
        self, topic: str, predicate: Callable[[mqtt.MQTTMessage], bool] = lambda m: True, timeout: float = 5.0
    ) -> mqtt.MQTTMessage:
        return wait_until(
            lambda: next((m for m in self.seen(topic) if predicate(m)), None), timeout, what=f"a message on {topic}"
        )

    def wait_json(self, topic: str, predicate: Callable[[dict], bool] = lambda d: True, timeout: float = 5.0) -> dict:
        def ok(m: mqtt.MQTTMessage) -> bool:
            try:
                return predicate(json.loads(m.payload))
            except (ValueError, KeyError, TypeError, IndexError):
                return False

        return json.loads(self.wait_message(topic, ok, timeout).payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def v5_props(**values: Any) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for k, v in values.items():
        setattr(p, k, v)
    return p


class DummyStack:
    """`slowctl up --dummy` as a user runs it, on free ports in a temporary directory."""

    def __init__(
        self, workdir: Path, tweak: Callable[[dict], None] | None = None, ui: bool = False, records: bool = False
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = yaml.safe_load(DUMMY_CONFIG.read_text())
        # the example bench's interlocks (LV before HV ...) only where a test asks for them (a tweak that
        # sets `interlocks`): the other tests switch HV on as they need
        self.bench_interlocks = self.config.pop("interlocks", {})
        ports = iter(free_ports(3 + len(self.config["devices"]) + 5))
        self.config["broker"]["port"] = self.port = next(ports)
        self.config["broker"]["tls_port"] = self.tls_port = next(ports)
        self.config["broker"]["websockets_port"] = self.ws_port = next(ports)
        for dev in self.config["devices"].values():
            dev["simulator"]["port"] = next(ports)
        self.config["state_dir"] = str(workdir / "state")
        # the control UI (Node-RED + nginx) only where a test asks for it (tests/ui); grafana: nothing listens
        self.config["ui"] = (
            {
                "enabled": True,
                "nodered_port": next(ports),
                "https_port": next(ports),
                "http_port": next(ports),
                "grafana": f"127.0.0.1:{next(ports)}",
            }
            if ui
            else {"enabled": False}
        )
        # the recorder and its FerretDB (tests/records) only where a test asks for them
        self.config["records"] = {"mongo_port": next(ports)} if records else {"enabled": False}
        if tweak:
            tweak(self.config)
        self.state = workdir / "state"
        self.config_path = workdir / "stack.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = workdir / "up.log"
        self.proc: subprocess.Popen | None = None
        self._probes: list[Probe] = []

    def start(
        self, timeout: float = 40.0, command: list[str] | None = None, env: dict[str, str] | None = None
    ) -> DummyStack:
        """`command` (default `python -m slowctl up --dummy`) gets `--config` with this stack's config;
        `timeout` is generous: CI machines are shared."""
        self._log = open(self.log_path, "wb")
        command = command or [sys.executable, "-m", "slowctl", "up", "--dummy"]
        self.proc = subprocess.Popen(
            [*command, "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            wait_until(
                lambda: b" online after " in self.log_path.read_bytes() or self.proc.poll() is not None,
                timeout,
                what="the stack to come up",
            )
            assert self.proc.poll() is None, f"stack exited: {self.log()}"
            assert b"WARNING" not in self.log_path.read_bytes(), self.log()
            self._wait_connected(timeout)
        except BaseException:
            self.stop()  # a stack that failed to come up must not outlive its test
            raise
        return self

    def _wait_connected(self, timeout: float) -> None:
        """Online is the service; a test's commands also need its instrument connected (status ok)."""
        probe = Probe("127.0.0.1", self.port, "viewer", self.credentials["viewer"])
        try:
            probe.subscribe(f"{self.config['mqtt']['topic_root']}/+/status")

            def latest() -> dict[str, dict]:
                return {m.topic.split("/")[-2]: json.loads(m.payload) for m in probe.seen()}

            def connected() -> bool:
                return all(latest().get(d, {}).get("state") == "ok" for d in self.config["devices"])

            try:
                wait_until(connected, timeout, what="every instrument connected")
            except AssertionError as e:
                last = latest()
                behind = {d: last.get(d, {}).get("state", "no status") for d in self.config["devices"]}
                logs = "\n".join(
                    f"--- {d}: {state}, {last.get(d, {}).get('error')}\n{self.service_log('service-' + d)[-2000:]}"
                    f"\n--- its simulator:\n{self.service_log('sim-' + d)[-2000:]}"
                    for d, state in behind.items()
                    if state != "ok"
                )
                raise AssertionError(f"{e}\n{logs}\n--- the stack:\n{self.log()[-3000:]}") from None
        finally:
            probe.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def service_log(self, name: str) -> str:
        return (self.state / "logs" / f"{name}.log").read_text(errors="replace")

    @property
    def credentials(self) -> dict[str, str]:
        return json.loads((self.state / "credentials.json").read_text())

    def probe(self, role: str | None = "viewer", password: str | None = None) -> Probe:
        pw = password if password is not None else (self.credentials[role] if role else None)
        p = Probe("127.0.0.1", self.port, role, pw)
        self._probes.append(p)
        return p

    def pids(self) -> dict[str, int]:
        """Process name -> pid of the supervisor's children (broker, interlock, sim-<dev>, service-<dev>)."""
        pids = {}
        for child in psutil.Process(self.proc.pid).children():
            try:
                argv = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            if "mosquitto" in argv[0]:
                pids["broker"] = child.pid
            elif "ferretdb" in argv[0]:
                pids["ferretdb"] = child.pid
            elif "recorder" in argv:
                pids["recorder"] = child.pid
            elif "interlock" in argv:
                pids["interlock"] = child.pid
            elif "run" in argv:
                pids["service-" + argv[argv.index("run") + 1]] = child.pid
            elif "sim" in argv:
                port = argv[argv.index("--tcp") + 1].rsplit(":", 1)[1]
                dev = next(d for d, c in self.config["devices"].items() if str(c["simulator"]["port"]) == port)
                pids["sim-" + dev] = child.pid
        return pids

    def slowctl(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 20
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "slowctl", *args],
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    def user_add(self, name: str, role: str, password: str) -> subprocess.CompletedProcess:
        """`slowctl user add` as a person types it (the password on stdin)."""
        return subprocess.run(
            [sys.executable, "-m", "slowctl", "user", "add", name, "--role", role, "--password-stdin"]
            + ["--config", str(self.config_path)],
            input=password + "\n",
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=20,
        )

    def stop(self) -> None:
        for p in self._probes:
            p.close()
        children = self.pids() if self.proc and self.proc.poll() is None else {}
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in children.values():  # never leave an orphan behind, whatever happened
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


def send(probe, topic, payload, **kw):
    """Publish one command and return the device's reply (exactly one is expected)."""
    device = topic.split("/")[1]
    reply_topic = f"slowctl/{device}/reply"
    before = len(probe.seen(reply_topic))

    def ours():  # the interlock's own offs share the reply topic; they are not answers to us
        return [
            r
            for r in probe.seen(reply_topic)[before:]
            if not str(json.loads(r.payload).get("id")).startswith("interlock:")
        ]

    probe.publish(topic, payload, **kw)
    wait_until(lambda: ours(), 5, what=f"a reply to {topic}")
    time.sleep(0.1)  # a second reply would arrive by now
    replies = ours()
    assert len(replies) == 1, [r.payload for r in replies]
    return json.loads(replies[0].payload)


def channel(probe, device, ch, predicate=lambda c: True, timeout=5.0):
    status = probe.wait_json(f"slowctl/{device}/status", lambda d: predicate(d["channels"][ch]), timeout)
    return status["channels"][ch]
