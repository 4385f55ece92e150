"""People's accounts: the file, the broker's lines, and every refusal leaving the files as they were."""

from __future__ import annotations

import json
import stat

import pytest

from slowctl.device.capabilities import CommandError
from slowctl.device.commands import Request, check_on_behalf, sender
from slowctl.device.contract import CommandTopics
from slowctl.stack.accounts import AccountError, Accounts

PW = "correct horse battery"


def files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_add_writes_the_account_the_broker_lines_and_the_acl(tmp_path):
    acc = Accounts(tmp_path, ["hv"])
    acc.add("alice", "operator", PW)
    acc.add("victor", "viewer", PW)
    body = json.loads((tmp_path / "users.json").read_text())
    assert body["users"]["alice"]["role"] == "operator" and body["users"]["alice"]["hash"].startswith("$7$101$")
    assert PW not in (tmp_path / "users.json").read_text()
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "users.passwd").stat().st_mode) == 0o600
    lines = (tmp_path / "users.passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "victor"]
    acl = (tmp_path / "users.acl").read_text()
    assert "user alice\ntopic read slowctl/#\ntopic read /+/status\ntopic write slowctl/+/by/alice/cmd\n" in acl
    victor = acl.split("user victor\n")[1]
    writes = [line for line in victor.splitlines() if "write" in line]
    assert writes == ["topic write slowctl/recorder/by/victor/cmd"], "a viewer only asks the recorder"
    again = Accounts(tmp_path, ["hv"])
    assert {a.name: a.role for a in again.users.values()} == {"alice": "operator", "victor": "viewer"}


@pytest.mark.parametrize(
    "name, role, password, error",
    [
        ("alice", "operator", PW, "exists already"),
        ("bob", "admin", PW, "unknown role 'admin'"),
        ("bob", "operator", "", "empty"),
        ("bob", "operator", "short", "too short: 5 characters, at least 12"),
        ("Bob", "operator", PW, "lower-case"),
        ("b/x", "operator", PW, "lower-case"),
        ("hv", "operator", PW, "taken by a service"),
        ("nodered", "operator", PW, "taken by a service"),
        ("operator", "operator", PW, "taken by a service"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(tmp_path, name, role, password, error):
    acc = Accounts(tmp_path, ["hv"])
    acc.add("alice", "operator", PW)
    before = files(tmp_path)
    with pytest.raises(AccountError, match=error):
        acc.add(name, role, password)
    assert files(tmp_path) == before


def test_passwd_role_and_remove_of_an_unknown_user_name_the_known_ones(tmp_path):
    acc = Accounts(tmp_path, [])
    acc.add("alice", "operator", PW)
    before = files(tmp_path)
    for change in (lambda: acc.passwd("bob", PW), lambda: acc.remove("bob"), lambda: acc.set_role("bob", "viewer")):
        with pytest.raises(AccountError, match=r"unknown user 'bob' \(known: alice\)"):
            change()
    with pytest.raises(AccountError, match="too short"):
        acc.passwd("alice", "x")
    assert files(tmp_path) == before
    old = acc.users["alice"].hash
    acc.passwd("alice", PW + "!")
    assert acc.users["alice"].hash != old
    acc.remove("alice")
    assert "alice" not in (tmp_path / "users.passwd").read_text()


def test_a_damaged_accounts_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "users.json").write_text('{"users": {"alice": {"role": "boss", "hash": "x"}}}')
    with pytest.raises(AccountError, match="users.json: cannot be read .*alice"):
        Accounts(tmp_path, [])


def test_the_topic_says_who_sent_a_command():
    t = CommandTopics("slowctl", "hv")
    assert t.sender("slowctl/hv/cmd") == ("operator", [])
    assert t.sender("slowctl/hv/cmd/vset/0") == ("operator", ["vset", "0"])
    assert t.sender("slowctl/hv/by/alice/cmd") == ("alice", [])
    assert t.sender("slowctl/hv/by/alice/cmd/on/1") == ("alice", ["on", "1"])
    assert t.sender("slowctl/hv/by/alice/other") is None
    assert t.sender("slowctl/hv2/cmd") is None
    assert t.of("alice") == "slowctl/hv/by/alice/cmd" and t.of("operator") == "slowctl/hv/cmd"


def test_only_a_front_end_says_for_whom_it_acts():
    check_on_behalf("nodered", "alice")
    with pytest.raises(CommandError, match="only a front-end"):
        check_on_behalf("alice", "bob")
    with pytest.raises(CommandError, match="must be a login name"):
        check_on_behalf("nodered", "Alice Smith")
    req = Request(by="nodered", on_behalf="alice")
    assert req.who == "nodered for alice" and req.reply(True)["for"] == "alice"
    assert Request(by="alice").who == "alice"
    t = CommandTopics("slowctl", "alarms")
    origin, error = sender(t, "slowctl/alarms/by/nodered/cmd", {"for": "alice"})
    assert (origin.who, origin.by, error) == ("nodered for alice", "nodered", None)
    assert sender(t, "slowctl/alarms/by/bob/cmd", {"for": "alice"})[1].startswith("'for' is refused from bob")


def test_the_compose_accounts_are_readable_by_the_containers_inside_a_private_secrets_dir(tmp_path):
    accounts = tmp_path / "secrets" / "accounts"
    Accounts(accounts, [], containers=True).add("alice", "operator", PW)
    assert stat.S_IMODE((accounts / "users.json").stat().st_mode) == 0o644, "Node-RED's uid 1000 reads it"
    assert stat.S_IMODE((accounts / "users.passwd").stat().st_mode) == 0o600, "the broker's entrypoint is root"
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700, "nobody else on the host gets in"


def test_slowctl_user_for_compose_writes_secrets_accounts_and_says_how_to_reload(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "config" / "bench.yaml"
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}  # no docker here
    r = subprocess.run(
        [sys.executable, "-m", "slowctl", "user", "add", "alice", "--role", "operator", "--password-stdin",
         "--compose", "--config", str(config)],
        input=PW + "\n", capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "docker compose exec -T mosquitto sh /mosquitto/config/docker-entrypoint.sh reload" in r.stdout
    accounts = tmp_path / "secrets" / "accounts"
    assert "alice" in json.loads((accounts / "users.json").read_text())["users"]
    assert "user alice" in (accounts / "users.acl").read_text()
