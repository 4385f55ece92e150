"""Mosquitto ACL, '$7$' password hashes and the credentials file."""

import base64
import hashlib
import hmac
import json
import os
import re
import stat

import pytest

from slowctl.config import parse_config
from slowctl.stack.broker import (
    PBKDF2_ITERATIONS,
    acl,
    hash_password,
    load_credentials,
    password_file,
    users_for,
    write_broker_files,
)
from slowctl.stack.tls import ensure_tls


def parse_acl(text: str, users: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Each user's rules; patterns would apply to every user, so there must be none."""
    blocks: dict[str, list[tuple[str, str]]] = {}
    user = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        assert words[0] != "pattern", f"a pattern applies to every user, roles included: {line}"
        if words[0] == "user":
            user = words[1]
            assert user not in blocks, f"user {user} appears twice"
            blocks[user] = []
        else:
            assert words[0] == "topic" and len(words) == 3 and words[1] in ("read", "write", "readwrite"), line
            assert user is not None, f"rule outside a user block: {line}"
            blocks[user].append((words[1], words[2]))
    assert set(blocks) == set(users), set(blocks) ^ set(users)
    return blocks


def matches(pattern: str, topic: str) -> bool:
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)


def can(rules, user: str, access: str, topic: str) -> bool:
    return any(a in (access, "readwrite") and matches(pat, topic) for a, pat in rules.get(user, []))


def test_matcher_sanity():
    assert matches("a/+/cmd/#", "a/x/cmd") and matches("a/+/cmd/#", "a/x/cmd/on/1")
    assert not matches("a/+/cmd", "a/x/cmd/on/1") and not matches("a/x", "a/y")


@pytest.fixture(scope="module")
def rules(stack_config):
    return parse_acl(acl(stack_config), users_for(stack_config))


DEVICES = ("hv", "lv", "climate")
PER_DEVICE = (
    "availability",
    "status",
    "metrics",
    "health",
    "event",
    "capabilities",
    "reply",
    "reply/mine",
    "cmd",
    "cmd/vset/0",
    "by/operator/cmd",
    "by/operator/cmd/vset/0",
    "by/nodered/cmd",
    "by/interlock/cmd",
    "by/alice/cmd",
)


def all_topics():
    out = [f"slowctl/{d}/{s}" for d in DEVICES for s in PER_DEVICE]
    out += [f"/{d}/{s}" for d in ("hv", "lv") for s in ("status", "cmd/setv/0", "cmd/switch/1")]
    return out


def test_users_are_the_roles_and_one_per_device(stack_config):
    assert users_for(stack_config) == [
        "viewer", "operator", "nodered", "telegraf", "interlock", "recorder", "procedures", *stack_config.devices
    ]  # fmt: skip


def test_roles_publish_no_device_topics_not_even_under_their_own_name(rules):
    for role in ("viewer", "telegraf", "operator", "nodered"):
        topics = all_topics() + [f"slowctl/{role}/{s}" for s in PER_DEVICE] + [f"/{role}/status"]
        assert not any(can(rules, role, "write", t) for t in topics if "/cmd" not in t), role


@pytest.mark.parametrize("user", ["viewer", "telegraf", "recorder"])
def test_readers_read_everything_write_nothing(rules, user):
    for topic in all_topics():
        assert not can(rules, user, "write", topic), topic
        if not topic.startswith("/"):
            assert can(rules, user, "read", topic), topic
    # legacy status for viewers; the archive takes the contract's topics only
    assert can(rules, user, "read", "/hv/status") == (user == "viewer")


@pytest.mark.parametrize("user", ["operator", "nodered"])
def test_operator_writes_only_commands(rules, user):
    """Under its own name only; the plain and tracker_dcs topics are the shared operator login's alone."""
    writable = [t for t in all_topics() if can(rules, user, "write", t)]
    own = ("by/operator/cmd", "by/operator/cmd/vset/0") if user == "operator" else ("by/nodered/cmd",)
    plain = ("cmd", "cmd/vset/0") if user == "operator" else ()
    assert sorted(writable) == sorted(
        [f"slowctl/{d}/{s}" for d in DEVICES for s in (*plain, *own)]
        + ([f"/{d}/cmd/{k}" for d in ("hv", "lv") for k in ("setv/0", "switch/1")] if user == "operator" else [])
    )
    for d in DEVICES:
        for s in ("availability", "status", "metrics", "health", "event", "capabilities", "reply"):
            assert can(rules, user, "read", f"slowctl/{d}/{s}")
    assert not can(rules, user, "write", "/hv/status")


@pytest.mark.parametrize("dev", DEVICES)
def test_service_writes_only_its_own_topics(rules, dev):
    user = dev
    writable = {t for t in all_topics() if can(rules, user, "write", t)}
    expected = {
        f"slowctl/{dev}/{s}"
        for s in ("availability", "status", "metrics", "health", "event", "capabilities", "reply", "reply/mine")
    }
    if dev in ("hv", "lv"):  # the pattern gives every device its own legacy topics
        expected.add(f"/{dev}/status")
    assert writable == expected
    readable = {t for t in all_topics() if can(rules, user, "read", t)}
    expected_read = {f"slowctl/{dev}/{s}" for s in PER_DEVICE if s.startswith(("cmd", "by/"))}
    if dev in ("hv", "lv"):
        expected_read |= {f"/{dev}/cmd/setv/0", f"/{dev}/cmd/switch/1"}
    assert readable == expected_read
    assert not any("+" in pat.split("/")[:2] or pat.startswith("slowctl/#") for _, pat in rules[user])


def test_acl_follows_topic_root(raw):
    raw["mqtt"]["topic_root"] = "lab/bench2"
    stack = parse_config(raw)
    r = parse_acl(acl(stack), users_for(stack))
    assert can(r, "operator", "write", "lab/bench2/hv/cmd")
    assert can(r, "nodered", "write", "lab/bench2/hv/by/nodered/cmd")
    assert not can(r, "operator", "write", "slowctl/hv/cmd")
    assert can(r, "hv", "write", "lab/bench2/hv/status") and not can(r, "hv", "write", "slowctl/hv/status")
    assert can(r, "operator", "write", "/lv/cmd/setv/0")  # legacy topics have no root


def test_acl_is_the_shared_files(stack_config):
    from slowctl.stack.paths import REPO

    text = acl(stack_config)
    assert text.startswith((REPO / "mosquitto" / "acl").read_text())
    device = (REPO / "mosquitto" / "acl-device.template").read_text()
    for d in stack_config.devices:
        assert device.replace("${DEVICE}", d) in text


def verify_mosquitto7(entry: str, password: str) -> bool:
    _, kind, iterations, salt_b64, hash_b64 = entry.split("$")
    assert kind == "7"
    salt = base64.b64decode(salt_b64, validate=True)
    expected = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations))
    return hmac.compare_digest(expected, base64.b64decode(hash_b64, validate=True))


def test_hash_format_and_verification():
    entry = hash_password("s3cret")
    assert entry.startswith(f"$7${PBKDF2_ITERATIONS}$") and PBKDF2_ITERATIONS == 101
    _, _, _, salt_b64, hash_b64 = entry.split("$")
    assert len(base64.b64decode(salt_b64)) == 12
    assert len(base64.b64decode(hash_b64)) == 64  # SHA-512
    assert verify_mosquitto7(entry, "s3cret")
    assert not verify_mosquitto7(entry, "s3cret ")


def test_hash_is_salted():
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b and verify_mosquitto7(a, "pw") and verify_mosquitto7(b, "pw")
    salt = b"0123456789ab"
    assert hash_password("pw", salt) == hash_password("pw", salt)
    assert hash_password("pw", salt).split("$")[3] == base64.b64encode(salt).decode()


def test_password_file_lines_verify():
    creds = {"viewer": "v-pw", "hv": "h-pw"}
    lines = password_file(creds, ["viewer", "hv"]).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["viewer", "hv"]
    assert verify_mosquitto7(lines[0].split(":", 1)[1], "v-pw")
    assert verify_mosquitto7(lines[1].split(":", 1)[1], "h-pw")


def test_credentials_created_0600(tmp_path):
    path = tmp_path / "state" / "credentials.json"
    creds = load_credentials(path, ["viewer", "operator"])
    assert set(creds) == {"viewer", "operator"}
    assert all(len(p) >= 24 for p in creds.values()) and creds["viewer"] != creds["operator"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == creds


def test_credentials_created_0600_despite_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "credentials.json"
        load_credentials(path, ["viewer"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_passwords_kept_new_users_added(tmp_path):
    path = tmp_path / "credentials.json"
    first = load_credentials(path, ["viewer", "operator"])
    again = load_credentials(path, ["viewer", "operator"])
    assert again == first
    more = load_credentials(path, ["viewer", "operator", "new"])
    assert more["viewer"] == first["viewer"] and more["operator"] == first["operator"]
    assert "new" in more and more["new"] not in first.values()
    assert json.loads(path.read_text()) == more
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_hand_set_password_is_never_replaced(tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"operator": "chosen-by-hand"}))
    creds = load_credentials(path, ["viewer", "operator"])
    assert creds["operator"] == "chosen-by-hand"
    assert json.loads(path.read_text())["operator"] == "chosen-by-hand"


def test_write_broker_files(tmp_path, stack_config):
    tls = ensure_tls(tmp_path / "tls", ["localhost"])
    conf, creds = write_broker_files(stack_config, tmp_path, tls)
    broker = tmp_path / "broker"
    assert conf == broker / "mosquitto.conf"
    passwd = broker / "passwd"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600
    entries = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert set(entries) == set(users_for(stack_config))
    for user, entry in entries.items():
        assert verify_mosquitto7(entry, creds[user]), user
    text = conf.read_text()
    assert "allow_anonymous false" in text and f"password_file {passwd}" in text
    b = stack_config.broker
    for port in (b.port, b.tls_port, b.websockets_port):
        assert f"listener {port} {b.bind}" in text
    assert f"certfile {tls.cert}" in text and f"keyfile {tls.key}" in text and "protocol websockets" in text
    assert not re.search(r"\$\{[A-Z_]+\}", text)
    assert (broker / "acl").read_text() == acl(stack_config)
    # a second run keeps the passwords
    _, creds2 = write_broker_files(stack_config, tmp_path, tls)
    assert creds2 == creds


INTERLOCK = (
    "slowctl/interlock/state",
    "slowctl/interlock/availability",
    "slowctl/interlock/event",
    "slowctl/interlock/rules/lv-before-hv",
    "slowctl/alarms/summary",
    "slowctl/alarms/event",
)


def test_the_interlock_process_publishes_no_command_under_another_name(rules):
    for topic in ("slowctl/alarms/by/alice/cmd", "slowctl/interlock/by/alice/cmd", "slowctl/alarms/cmd",
                  "slowctl/interlock/cmd", "slowctl/hv/by/alice/cmd", "slowctl/hv/cmd"):  # fmt: skip
        assert not can(rules, "interlock", "write", topic), topic
    assert can(rules, "interlock", "write", "slowctl/hv/by/interlock/cmd")


def test_only_the_interlock_process_publishes_interlock_state(rules, stack_config):
    for user in users_for(stack_config):
        for topic in INTERLOCK:
            assert can(rules, user, "write", topic) == (user == "interlock"), (user, topic)
    # it reads every status and may command every device (it only ever sends `off`)
    assert can(rules, "interlock", "read", "slowctl/hv/status")
    assert can(rules, "interlock", "write", "slowctl/hv/by/interlock/cmd")
    assert not can(rules, "interlock", "write", "slowctl/hv/cmd")
    assert not can(rules, "interlock", "write", "slowctl/hv/status")


@pytest.mark.parametrize("dev", DEVICES)
def test_a_device_reads_the_interlock_state_it_enforces(rules, dev):
    assert can(rules, dev, "read", "slowctl/interlock/state")
    assert can(rules, dev, "read", "slowctl/interlock/availability")
    assert not can(rules, dev, "write", "slowctl/interlock/state")
