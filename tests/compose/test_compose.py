"""The compose files: schema, merges, pinning, secrets, ports, restart/health, devices vs config."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from tests.compose.composecli import FILES, REPO, SCHEMA, ComposeError, raw, render, variables

from slowctl.stack.init import OPTIONAL

jsonschema = pytest.importorskip("jsonschema")

STACKS = {
    "prod": ("prod",),
    "prod+dev": ("prod", "dev"),
    "prod+dummy": ("prod", "dummy"),
    "prod+dev+dummy": ("prod", "dev", "dummy"),
}
BENCH = yaml.safe_load((REPO / "config" / "bench.yaml").read_text())
DEVICES = list(BENCH["devices"])
ONE_SHOT = "no"  # restart policy of a job that runs once (checks, init)


@pytest.fixture(scope="module")
def validator():
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is absent: the Compose Specification schema comes with ../shared")
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """A .env as `slowctl init` writes it."""
    from slowctl.config import load_config
    from slowctl.stack.init import read_env, write_env
    from slowctl.stack.init import variables as env_vars

    path = tmp_path_factory.mktemp("env") / ".env"
    write_env(path, env_vars(load_config(REPO / "config" / "bench.yaml"), "bench.example.org", "bench.yaml"))
    return read_env(path)


def errors_of(validator, model) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(model)]


@pytest.mark.parametrize("name", FILES)
def test_each_file_validates(validator, name):
    assert errors_of(validator, raw(name)) == []


@pytest.mark.parametrize("stack", STACKS)
def test_merged_stack_validates_after_interpolation(validator, env, stack):
    """The real compose renders the merge with a .env from `slowctl init`; the schema is a second opinion."""
    assert errors_of(validator, render(*STACKS[stack], env=env)) == []


@pytest.mark.parametrize("stack", STACKS)
def test_compose_renders_every_merge_with_a_value_for_every_variable(env, stack):
    """The real `docker compose config`, with the .env of `slowctl init` (no schema needed)."""
    model = render(*STACKS[stack], env=env)
    assert "${" not in json.dumps(model) and set(model["services"]) >= {"mosquitto", "influxdb-init", "telegraf"}


def test_validation_catches_a_broken_file(validator):
    broken = raw("prod")
    broken["services"]["mosquitto"]["restart"] = ["always"]
    broken["services"]["mosquitto"]["healthcheck"]["intervall"] = "10s"
    assert len(errors_of(validator, broken)) == 2


def test_missing_secret_stops_compose_with_a_hint(env):
    partial = {k: v for k, v in env.items() if k != "MQTT_PASSWORD_HV"}
    with pytest.raises(ComposeError, match="MQTT_PASSWORD_HV is missing a value: run slowctl init"):
        render("prod", "dummy", env=partial)


def test_a_notification_choice_without_a_file_is_not_created_as_a_directory(env):
    model = render("prod", env={**env, "GRAFANA_NOTIFY": "slack"})
    (notify,) = [v for v in model["services"]["grafana"]["volumes"] if v["target"].endswith("notify.yaml")]
    assert notify["source"].endswith("grafana/notify/slack.yaml") and not notify["bind"].get("create_host_path")


_RENDERED: dict[str, dict] = {}


def merged(stack: str) -> dict:
    """The merge as compose makes it, variables left as written."""
    if stack not in _RENDERED:
        _RENDERED[stack] = render(*STACKS[stack])
    return _RENDERED[stack]


def services(stack: str) -> dict:
    return merged(stack)["services"]


def test_images_pinned_to_exact_versions():
    for stack in STACKS:
        for name, svc in services(stack).items():
            image = svc.get("image")
            assert image, f"{stack}: {name} has no image (a built service is tagged too)"
            assert "latest" not in image and "${" not in image, f"{name}: {image}"
            assert re.search(r":\d+\.\d+\.\d+(-[a-z0-9.-]+)?$", image) or "@sha256:" in image, f"{name}: {image}"


def test_one_slowctl_image_for_every_device_and_simulator():
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    built = {n: s for n, s in services("prod+dummy").items() if "build" in s}
    assert set(built) >= {f"device-{d}" for d in DEVICES} | {f"sim-{d}" for d in DEVICES} | {"mongo-check"}
    assert {s["image"] for n, s in built.items() if n.startswith(("device-", "sim-", "mongo-check"))} == {
        f"slowctl/slowctl:{version}"
    }
    assert all(
        s["build"]["dockerfile"] == "services/Dockerfile" for n, s in built.items() if n.startswith(("device-", "sim-"))
    )
    dockerfile = (REPO / "services" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", dockerfile, re.M)


def test_production_publishes_only_the_gateway_and_mqtt_tls():
    published = {n: s["ports"] for n, s in services("prod").items() if s.get("ports")}
    assert set(published) == {"gateway", "mosquitto"}, published
    assert published["mosquitto"] == ["${SLOWCTL_MQTTS_PORT:-8883}:8883"]
    assert sorted(p.split(":")[-1] for p in published["gateway"]) == ["443", "80"]


def test_dev_publishes_internal_ports_on_loopback_only(env):
    def published(model: dict) -> dict[str, list[tuple[str, int]]]:
        return {n: [(p.get("host_ip", ""), p["target"]) for p in s.get("ports", [])] for n, s in model.items()}

    prod = published(render("prod", env=env)["services"])
    dev = published(render("prod", "dev", env=env)["services"])
    dev_ports = {n: [p for p in ps if p not in prod.get(n, [])] for n, ps in dev.items()}
    dev_ports = {n: ps for n, ps in dev_ports.items() if ps}
    assert all(ip == "127.0.0.1" for ps in dev_ports.values() for ip, _ in ps), dev_ports
    assert {n: sorted(str(target) for _, target in ps) for n, ps in dev_ports.items()} == {
        "mosquitto": ["1883"],
        "influxdb": ["8086"],
        "grafana": ["3000"],
        "nodered": ["1880"],
    }


def test_dev_mounts_the_source_into_the_device_services():
    for d in DEVICES:
        targets = {mount(v)[1] for v in services("prod+dev")[f"device-{d}"]["volumes"]}
        assert {"/opt/slowctl/services", "/opt/slowctl/dummy"} <= targets


@pytest.mark.parametrize("stack", STACKS)
def test_restart_policy_healthcheck_and_log_limits(stack):
    for name, svc in services(stack).items():
        assert svc.get("restart") in ("unless-stopped", ONE_SHOT), f"{name}: restart {svc.get('restart')}"
        assert svc.get("logging", {}).get("options", {}).get("max-size"), f"{name}: no log size limit"
        if svc["restart"] == ONE_SHOT:
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"


def test_order_waits_for_health_where_it_matters():
    svcs = services("prod+dummy")
    for d in DEVICES:
        deps = svcs[f"device-{d}"]["depends_on"]
        assert deps["mosquitto"]["condition"] == "service_healthy"
        assert deps[f"sim-{d}"]["condition"] == "service_healthy"
    for name in ("telegraf", "nodered", "grafana"):
        conditions = {c["condition"] for c in svcs[name].get("depends_on", {}).values()}
        assert conditions and conditions <= {"service_healthy", "service_completed_successfully"}, name
    assert svcs["nodered"]["depends_on"]["nodered-init"]["condition"] == "service_completed_successfully"
    # the gateway resolves upstreams per request (a 503 page meanwhile): it only needs them created
    assert set(svcs["gateway"]["depends_on"]) == {"nodered", "grafana", "mosquitto"}
    assert svcs["mongo-check"]["depends_on"]["mongo"]["condition"] == "service_healthy"


def mount(volume) -> tuple[str, str]:
    """(source, target) of a volume in the short ("src:dst[:ro]") or the long form."""
    if isinstance(volume, dict):
        return str(volume["source"]), str(volume["target"])
    source, target = volume.split(":")[:2]
    return source, target


def test_every_piece_of_state_is_on_a_named_volume():
    model = merged("prod")
    named = set(model["volumes"])
    state = {
        "mosquitto": "/mosquitto/data",
        "mongo": "/data/db",
        "influxdb": "/var/lib/influxdb2",
        "grafana": "/var/lib/grafana",
        "nodered": "/data",
        "recorder": "/var/lib/slowctl/recorder",
        "procedures": "/var/lib/slowctl/procedures",
        **{f"device-{d}": "/var/lib/slowctl/devices" for d in DEVICES},
    }
    for svc, path in state.items():
        mounts = {target: source for source, target in map(mount, model["services"][svc]["volumes"])}
        assert mounts.get(path) in named, f"{svc}: {path} is not on a named volume ({mounts})"
    used = {mount(v)[0] for s in model["services"].values() for v in s.get("volumes", [])}
    assert named <= used, f"declared but unused: {named - used}"


def test_device_services_match_the_stack_config():
    prod = services("prod")
    assert {n[len("device-") :] for n in prod if n.startswith("device-")} == set(DEVICES)
    broker_env = prod["mosquitto"]["environment"]
    for d in DEVICES:
        svc = prod[f"device-{d}"]
        assert svc["command"][:2] == ["run", d]
        var = f"MQTT_PASSWORD_{d.upper()}"
        assert svc["environment"]["SLOWCTL_MQTT_USERNAME"] == d  # the ACL's %u
        assert svc["environment"]["SLOWCTL_MQTT_PASSWORD"] == broker_env[var] == f"${{{var}:?run slowctl init}}"
    for role in ("VIEWER", "OPERATOR", "NODERED", "TELEGRAF"):
        assert f"MQTT_PASSWORD_{role}" in broker_env


def test_procedure_runner_is_set_up_like_the_recorder():
    """Its own broker login, the recorder's least-privilege MongoDB user, its journal on a volume of its own,
    the config directory mounted so that `procedures.paths` (relative to the config) resolve."""
    prod = services("prod")
    runner, recorder = prod["procedures"], prod["recorder"]
    config = "/etc/slowctl/config/${SLOWCTL_CONFIG:-bench.yaml}"
    assert runner["command"] == ["procedure-runner", "--config", config, "--base", "/etc/slowctl/config"]
    env = runner["environment"]
    assert env["SLOWCTL_MQTT_USERNAME"] == "procedures"
    assert env["SLOWCTL_MQTT_PASSWORD"] == prod["mosquitto"]["environment"]["MQTT_PASSWORD_PROCEDURES"]
    assert {k: v for k, v in env.items() if k.startswith("SLOWCTL_MONGO_")} == {
        k: v for k, v in recorder["environment"].items() if k.startswith("SLOWCTL_MONGO_")
    }
    mounts = dict(mount(v)[::-1] for v in runner["volumes"])
    assert mounts[env["SLOWCTL_STATE_DIR"]] == "procedures-state"
    assert mounts["/etc/slowctl/config"].endswith("config") and mounts["/etc/slowctl/config"] != "procedures-state"
    assert runner["depends_on"] == recorder["depends_on"]
    assert runner["image"] == recorder["image"] and runner["healthcheck"]["test"] == recorder["healthcheck"]["test"]
    dockerfile = (REPO / "services" / "Dockerfile").read_text()
    assert env["SLOWCTL_STATE_DIR"] in dockerfile, "a fresh named volume takes the owner of the image's directory"


def test_serial_instruments_are_mapped_in_production_and_reset_for_the_dummy_stack():
    prod, dummy = services("prod"), services("prod+dummy")
    for d, cfg in BENCH["devices"].items():
        addr = cfg["address"]
        if addr.startswith("/dev/"):
            assert [(m["source"], m["target"]) for m in prod[f"device-{d}"]["devices"]] == [(addr, addr)]
        else:
            assert "devices" not in prod[f"device-{d}"]
        assert "devices" not in dummy[f"device-{d}"], d


def test_dummy_overlay_simulates_every_device():
    svcs = services("prod+dummy")
    for d, cfg in BENCH["devices"].items():
        sim = svcs[f"sim-{d}"]
        assert sim["command"][:2] == ["simulate", d] and sim["command"][-2:] == ["--bind", "0.0.0.0"]
        assert str(cfg["simulator"]["port"]) in " ".join(sim["healthcheck"]["test"])
        assert svcs[f"device-{d}"]["command"][-2:] == ["--simulator", f"sim-{d}"]
        assert "ports" not in sim


SECRET = re.compile(r"(PASSWORD|TOKEN|SECRET)")
WEAK = {"admin", "password", "secret", "changeme", "change-me", "root", "test", "mosquitto", "nodered", "grafana"}


def test_env_example_documents_every_variable_without_values(env):
    example = (REPO / ".env.example").read_text()
    assigned = dict(re.findall(r"^([A-Z_0-9]+)=(.*)$", example, re.M))
    assert set(assigned) == set(env) | set(OPTIONAL), set(assigned) ^ (set(env) | set(OPTIONAL))
    assert not set(env) & set(OPTIONAL), "optional settings are the user's: init leaves them out"
    assert all(v == "" for v in assigned.values())
    used = set().union(*(variables((REPO / f).read_text()) for f in FILES.values()))
    missing = used - set(env) - set(OPTIONAL)
    assert not missing, f"used in compose files but neither written by slowctl init nor optional: {missing}"


def tracked_files() -> list:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def test_no_secrets_or_default_passwords_in_tracked_files(env):
    assert ".env" not in {p.name for p in tracked_files()}
    assert not any(p.relative_to(REPO).parts[0] == "secrets" for p in tracked_files())
    ignored = subprocess.run(
        ["git", "check-ignore", ".env", "secrets/tls/server.key", ".slowctl/credentials.json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == [".env", "secrets/tls/server.key", ".slowctl/credentials.json"]
    for path in tracked_files():
        if path.suffix in (".png", ".ico") or "node_modules" in path.parts or path.name == "package-lock.json":
            continue
        text = path.read_text(errors="replace")
        assert "-----BEGIN " + "PRIVATE KEY" not in text and "BEGIN " + "CERTIFICATE-" not in text, (
            f"{path}: key or certificate"
        )
        # a secret variable is only ever referenced, never given a value or a fallback
        # (an optional setting, e.g. the SMTP relay's password, may fall back to empty: not configured)
        for m in re.finditer(r"\$\{((?:[A-Z_]*_)?(?:PASSWORD|TOKEN|SECRET)[A-Z_]*)(:?-)([^}]*)\}", text):
            if not (m.group(1) in OPTIONAL and m.group(3) == ""):
                pytest.fail(f"{path}: {m.group(1)} has a default value")
        in_tests = "tests" in path.relative_to(REPO).parts[:1]  # fixtures make up their own
        for m in (
            []
            if in_tests
            else re.finditer(
                r"^[ \t]*([A-Z_]*(?:PASSWORD|TOKEN|SECRET)[A-Z_]*)[ \t]*[=:][ \t]*['\"]?([^\s'\"$#]+)", text, re.M
            )
        ):
            value = m.group(2)
            if value.startswith(("${", "process.env", "os.environ")):
                continue
            # a lower-case-hyphen word names a key (e.g. in credentials.json); anything else is a value
            if value.lower() in WEAK or not re.fullmatch(r"[a-z][a-z0-9-]*", value):
                pytest.fail(f"{path}: {m.group(1)} is given the literal value {value!r}")
        if path.suffix != ".md" and not in_tests:  # those say it is refused
            assert not re.search(r"admin[:/]admin|password: ?admin\b", text, re.I), f"{path}: admin/admin"


def test_compose_references_secrets_only_where_needed():
    """Least privilege: a container gets the secrets of its own job only."""
    prod = services("prod")
    for name, svc in prod.items():
        secret_vars = {v for v in variables(json.dumps(svc.get("environment", {}))) if SECRET.search(v)}
        if name.startswith("device-"):
            assert secret_vars == {f"MQTT_PASSWORD_{name[len('device-') :].upper()}"}, name
        if name in ("recorder", "procedures"):
            assert secret_vars == {f"MQTT_PASSWORD_{name.upper()}", "MONGO_PASSWORD"}, name
        if name == "mosquitto":
            assert all(v.startswith("MQTT_PASSWORD_") for v in secret_vars)
        assert "env_file" not in svc, f"{name}: env_file hands over every secret"
