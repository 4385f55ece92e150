"""The native stack: Mosquitto, simulators and device services as supervised processes.

State (credentials, broker files, logs, the resolved config, stack.json for
clients) lives in the state directory, `./.slowctl/` by default.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import yaml

from slowctl import running
from slowctl.config import DeviceConfig, StackConfig
from slowctl.device.contract import Topics
from slowctl.mqtt import Endpoint, MqttSession
from slowctl.stack.broker import service_user, users_for, write_broker_files
from slowctl.stack.records import NativeRecords
from slowctl.stack.supervisor import ProcessSpec, Supervisor, port_open
from slowctl.stack.tls import TlsFiles
from slowctl.stack.ui import NativeUi, tls_files

SIM_HOST = "127.0.0.1"


class StackError(Exception):
    pass


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )
    if not path:
        raise StackError("mosquitto not found: install it (apt-get install mosquitto)")
    return path


def simulator_args(dev_id: str, dev: DeviceConfig, config_dir: Path, host: str) -> list[str]:
    """`slowctl sim` arguments that simulate this device as its config describes."""
    sim = dev.simulator
    if sim is None:
        raise StackError(f"devices.{dev_id}.simulator: needed to simulate it (port of its simulator)")
    args = [dev.model, "--tcp", f"{host}:{sim.port}"]
    if sim.scenario:
        # a file relative to the config, else a bundled scenario name (dummy/README.md)
        beside = config_dir / sim.scenario
        args += ["--scenario", str(beside) if beside.is_file() else sim.scenario]
    if sim.baud:
        args += ["--baud", str(sim.baud)]
    return args + sim.args


def resolve_dummy(raw: dict, stack: StackConfig) -> dict:
    """The config the services get: simulated devices point at their simulator."""
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    raw.setdefault("mqtt", {})
    raw["mqtt"]["host"] = stack.broker.bind if stack.broker.bind not in ("0.0.0.0", "::") else "127.0.0.1"
    raw["mqtt"]["port"] = stack.broker.port
    for dev_id, dev in stack.devices.items():
        if dev.simulator is None:
            raise StackError(f"devices.{dev_id}.simulator: needed for --dummy (port of its simulator)")
        raw["devices"][dev_id]["address"] = f"socket://{SIM_HOST}:{dev.simulator.port}"
    return raw


class NativeStack:
    def __init__(
        self, stack: StackConfig, raw: dict, config_path: Path, state_dir: Path, dummy: bool, ui: bool = True
    ) -> None:
        self.stack = stack
        self.raw = raw
        self.config_path = config_path
        self.state_dir = state_dir.resolve()
        self.dummy = dummy
        self.stop_event = threading.Event()
        self.supervisor = Supervisor(stack.supervisor, self.state_dir / "logs", say=self.say)
        self.ui = NativeUi(stack, self.state_dir, enabled=ui)  # Node-RED and the gateway (slowctl/ui.py)
        self.records = NativeRecords(stack, self.state_dir)  # FerretDB and the recorder, when installed

    @staticmethod
    def say(text: str) -> None:
        print(f"[slowctl] {text}", flush=True)

    def _specs(
        self, resolved: Path, creds: dict[str, str]
    ) -> tuple[ProcessSpec, list[ProcessSpec], list[ProcessSpec], list[ProcessSpec]]:
        """The broker, the simulators, the services, and the record's FerretDB and recorder (or nothing)."""
        conf = self.state_dir / "broker" / "mosquitto.conf"
        broker = ProcessSpec(
            "broker",
            [find_mosquitto(), "-c", str(conf)],
            ready_port=(self._client_host(), self.stack.broker.port),
            tier=0,
        )
        sims = []
        if self.dummy:
            for dev_id, dev in self.stack.devices.items():
                assert dev.simulator is not None, "simulator_args refuses a device without one"
                argv = [
                    sys.executable,
                    "-m",
                    "slowctl",
                    "sim",
                    *simulator_args(dev_id, dev, self.config_path.parent, SIM_HOST),
                ]
                sims.append(ProcessSpec(f"sim-{dev_id}", argv, ready_port=(SIM_HOST, dev.simulator.port), tier=1))
        services = [
            ProcessSpec(
                f"service-{dev_id}",
                [
                    sys.executable,
                    "-m",
                    "slowctl",
                    "run",
                    dev_id,
                    "--config",
                    str(resolved),
                    "--state-dir",
                    str(self.state_dir / "devices"),
                ],
                env={
                    "SLOWCTL_MQTT_USERNAME": service_user(dev_id),
                    "SLOWCTL_MQTT_PASSWORD": creds[service_user(dev_id)],
                },
                tier=2,
            )
            for dev_id in self.stack.devices
        ]
        # first: the device services block protected channels until it has spoken; always: the alarm handler
        argv = [sys.executable, "-m", "slowctl", "interlock", "--config", str(resolved)]
        argv += ["--state-dir", str(self.state_dir / "devices")]
        env = {"SLOWCTL_MQTT_USERNAME": "interlock", "SLOWCTL_MQTT_PASSWORD": creds["interlock"]}
        services.insert(0, ProcessSpec("interlock", argv, env=env, tier=2))
        if self.stack.procedures.enabled:  # runs stop safely if the runner stops; results go through its journal
            argv = [sys.executable, "-m", "slowctl", "procedure-runner", "--config", str(resolved)]
            argv += ["--state-dir", str(self.state_dir), "--base", str(self.config_path.parent)]
            env = {
                "SLOWCTL_MQTT_USERNAME": "procedures",
                "SLOWCTL_MQTT_PASSWORD": creds["procedures"],
                **self.records.mongo_env(),
            }
            services.append(ProcessSpec("procedures", argv, env=env, tier=2))
        records = self.records.specs(resolved, creds["recorder"], self._client_host(), self.stack.broker.port)
        return broker, sims, services, records

    def _client_host(self) -> str:
        return "127.0.0.1" if self.stack.broker.bind in ("0.0.0.0", "::") else self.stack.broker.bind

    def prepare(self) -> tuple[Path, dict[str, str]]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.tls = self._tls()
        try:
            _, creds = write_broker_files(self.stack, self.state_dir, self.tls)
        except ValueError as exc:
            raise StackError(str(exc)) from None
        resolved_raw = resolve_dummy(self.raw, self.stack) if self.dummy else self.raw
        resolved = self.state_dir / "stack.yaml"
        resolved.write_text(
            "# generated by slowctl up from "
            + str(self.config_path)
            + "\n"
            + yaml.safe_dump(resolved_raw, sort_keys=False)
        )
        return resolved, creds

    def _tls(self) -> TlsFiles:
        return tls_files(self.stack, self.state_dir)  # the gateway's host name too

    def write_runtime(self) -> None:
        info = {
            "pid": os.getpid(),
            "config": str(self.state_dir / "stack.yaml"),
            "mqtt": {
                "host": self._client_host(),
                "port": self.stack.broker.port,
                "tls_port": self.stack.broker.tls_port,
                "websockets_port": self.stack.broker.websockets_port,
                "tls_ca": str(self.tls.ca_cert),
                "topic_root": self.stack.mqtt.topic_root,
                "roles": users_for(self.stack),  # the MQTT logins in credentials.json (`slowctl env --role`)
            },
            "devices": list(self.stack.devices),
            "records": (
                {"mongo_port": self.stack.records.mongo_port, "password_file": str(self.records.dir / "mongo-password")}
                if self.records.active
                else {"off": self.records.reason}
            ),
        }
        (self.state_dir / "stack.json").write_text(json.dumps(info, indent=2))
        running.register(self.state_dir, os.getpid())  # clients in other directories find it

    def wait_online(self, creds: dict[str, str], timeout: float, wanted: set[str] | None = None) -> list[str]:
        """Devices (and the interlock process) whose availability is not `online` after `timeout` s."""
        wanted = wanted or {
            *self.stack.devices,
            "interlock",
            *(["procedures"] if self.stack.procedures.enabled else []),
        }
        online: set[str] = set()
        endpoint = Endpoint(self._client_host(), self.stack.broker.port, "viewer", creds["viewer"])
        session = MqttSession(endpoint, f"slowctl-up-{os.getpid()}")
        root = self.stack.mqtt.topic_root

        def on_availability(msg) -> None:
            device = msg.topic[len(root) + 1 :].split("/")[0]
            (online.add if msg.payload == b"online" else online.discard)(device)

        session.subscribe(f"{root}/+/availability", on_availability)
        session.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not online.issuperset(wanted):
            if self.stop_event.wait(0.05):
                break
        session.stop()
        return sorted(wanted - online)

    def _check_ports_free(self) -> None:
        b = self.stack.broker
        ports = [
            (self._client_host(), b.port, "broker"),
            (self._client_host(), b.tls_port, "broker TLS"),
            (self._client_host(), b.websockets_port, "broker websockets"),
        ]
        if self.records.active:
            ports.append(("127.0.0.1", self.stack.records.mongo_port, "records (FerretDB)"))
        if self.dummy:
            ports += [
                (SIM_HOST, d.simulator.port, f"simulator of {i}") for i, d in self.stack.devices.items() if d.simulator
            ]
        busy = [f"{what} port {port}" for host, port, what in ports if port_open(host, port)]
        if busy:
            raise StackError(f"already in use: {', '.join(busy)} (another slowctl stack or broker running?)")

    def up(self, online_timeout: float | None = None) -> int:
        t0 = time.monotonic()
        self._check_ports_free()
        resolved, creds = self.prepare()
        broker, sims, services, records = self._specs(resolved, creds)
        try:
            timeout = max(10.0, 0.3 * len(sims))  # many simulators start slower on a small machine
            self.ui.check_ports()
            docstore, recorder = records[:1], records[1:]  # [FerretDB], [the recorder], or nothing
            self.supervisor.start([broker, *docstore])
            if recorder:  # subscribed before anything happens: the first events are recorded too
                self.supervisor.start(recorder)
                if self.wait_online(creds, 15.0, {"recorder"}):
                    self.say("WARNING: the recorder is not online after 15 s (logs/recorder.log)")
            self.supervisor.start(sims, ready_timeout=timeout)
            self.supervisor.start(services)
            self.supervisor.start(self.ui.specs(creds, self.tls), ready_timeout=30)
            self.write_runtime()
            # ~0.5 s of CPU per service start-up; on 2 cores 50 services need more than 10 s
            missing = self.wait_online(creds, online_timeout or max(10.0, 0.5 * len(services)))
            self._summary(sims, missing, time.monotonic() - t0)
            self.supervisor.run(self.stop_event)
        except RuntimeError as exc:
            self.say(f"error: {exc}")
            return 1
        finally:
            self.say("stopping")
            (self.state_dir / "stack.json").unlink(missing_ok=True)  # clients: no stack here from now on
            running.unregister(self.state_dir)
            self._stopped(*self.supervisor.stop_all())
        return 0

    def _stopped(self, count: int, killed: list[str], alive: list[str]) -> None:
        if alive:
            self.say(f"WARNING: still running after SIGKILL: {', '.join(alive)}; stop them by hand")
        elif killed:
            self.say(f"stopped: all {count} processes; killed after not stopping on SIGTERM: {', '.join(killed)}")
        else:
            self.say(f"stopped: all {count} processes have exited")

    def _summary(self, sims: list[ProcessSpec], missing: list[str], elapsed: float) -> None:
        host, port = self._client_host(), self.stack.broker.port
        root = self.stack.mqtt.topic_root
        say = self.say
        say(f"state directory  {self.state_dir} (credentials.json, logs/, broker/)")
        say(
            f"broker           mqtt://{host}:{port}, mqtts://{host}:{self.stack.broker.tls_port} "
            f"(CA {self.tls.ca_cert})  users: viewer, operator, nodered, telegraf, <device>"
        )
        for spec in sims:
            assert spec.ready_port is not None
            say(
                f"simulator        {spec.name[4:]:<10} {spec.argv[4]:<12} socket://{spec.ready_port[0]}:{spec.ready_port[1]}"
            )
        for dev_id, dev in self.stack.devices.items():
            say(f"device           {dev_id:<10} {dev.model:<12} {Topics(root, dev_id).base}/#")
        if self.stack.procedures.enabled:
            say(f"procedures       {root}/procedures/# (slowctl procedure available | run | list)")
        say(
            f"interlock        {len(self.stack.interlocks)} rules, {len(self.stack.alarms.limits)} alarm limits: "
            f"{root}/interlock/state, {root}/alarms/summary (slowctl alarms)"
        )
        for line in self.ui.summary() + self.records.summary():
            say(line)
        if missing:
            say(f"WARNING: not online after {elapsed:.1f} s: {', '.join(missing)} (logs in {self.state_dir / 'logs'})")
        else:
            say(f"all {len(self.stack.devices)} devices and the interlock process online after {elapsed:.1f} s")
        say(
            f'try: eval "$(slowctl env --role viewer)" && mosquitto_sub -h {host} -p {port} '
            f'-u "$SLOWCTL_MQTT_USERNAME" -P "$SLOWCTL_MQTT_PASSWORD" -t \'{root}/#\' -v'
        )
        say("Ctrl-C stops everything")
