"""nodered/accounts/: the dashboard's logins from users.json (as `slowctl user` writes it) and the Dashboard 2
plugin that names the person in msg._client.user, run in Node.js without Node-RED."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import pytest

from harness import REPO
from slowctl.stack.accounts import Accounts
from slowctl.stack.broker import hash_password

# a line-driven harness: one JSON request per line in, one JSON answer per line out
DRIVER = r"""
const readline = require('readline')
const accounts = require(process.argv[1] + '/accounts.js')
const people = accounts.fromEnv()
const logged = []
people.log = { info: t => logged.push('info: ' + t), warn: t => logged.push('warn: ' + t), error: t => logged.push('error: ' + t) }
let changes = 0
people.onChange(() => { changes += 1 })
const plugins = []
require(process.argv[1] + '/plugin.js')({
    log: people.log,
    plugins: { registerPlugin: (id, def) => plugins.push(Object.assign({ id }, def)) }
})
const rl = readline.createInterface({ input: process.stdin })
rl.on('line', line => {
    const q = JSON.parse(line)
    let a
    if (q.op === 'verify') a = people.verify(q.login, q.password)
    else if (q.op === 'auth') a = people.authenticate({ headers: q.headers })
    else if (q.op === 'changes') a = changes
    else if (q.op === 'log') a = logged.splice(0)
    else if (q.op === 'plugins') a = plugins.map(p => ({ id: p.id, type: p.type, hooks: Object.keys(p.hooks) }))
    else if (q.op === 'hook') a = plugins[0].hooks.onAddConnectionCredentials({ request: { headers: q.headers } }, q.msg)
    process.stdout.write(JSON.stringify(a === undefined ? null : a) + '\n')
})
"""


class Driver:
    def __init__(self, users_file) -> None:
        node = shutil.which("node")
        if not node:
            pytest.skip("node not installed")
        self.proc = subprocess.Popen(
            [node, "-e", DRIVER, str(REPO / "nodered" / "accounts")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "SLOWCTL_ACCOUNTS_FILE": str(users_file)},
        )

    def ask(self, **q):
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(q) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def verify(self, login, password):
        return self.ask(op="verify", login=login, password=password)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def people(tmp_path):
    accounts = Accounts(tmp_path / "accounts", ["hv", "lv"])
    driver = Driver(accounts.file)
    yield accounts, driver
    driver.close()


def basic(login, password):
    return {"authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


def test_logins_checked_against_slowctl_users_hashes(people):
    accounts, node = people
    assert node.verify("alice", "whatever-password") is None  # no users.json yet: nobody
    assert any("nobody can log in" in line for line in node.ask(op="log"))
    accounts.add("alice", "operator", "alice-password-1")
    accounts.add("victor", "viewer", "victor-password-1")
    assert node.verify("alice", "alice-password-1") == {"login": "alice", "role": "operator"}
    assert node.verify("victor", "victor-password-1") == {"login": "victor", "role": "viewer"}
    for login, password in (("alice", "victor-password-1"), ("alice", ""), ("carol", "alice-password-1"), ("", "")):
        assert node.verify(login, password) is None, (login, password)
    assert node.ask(op="auth", headers=basic("alice", "alice-password-1"))["login"] == "alice"
    assert node.ask(op="auth", headers=basic("alice", "pass:with:colons")) is None
    assert node.ask(op="auth", headers={"authorization": "Bearer x"}) is None
    assert node.ask(op="auth", headers={}) is None
    # a password with a colon and non-ASCII characters: UTF-8, split at the first colon
    accounts.passwd("alice", "pässword:with:colons")
    assert node.ask(op="auth", headers=basic("alice", "pässword:with:colons"))["login"] == "alice"


def test_changes_count_at_once_without_a_restart(people):
    accounts, node = people
    accounts.add("alice", "operator", "alice-password-1")
    assert node.verify("alice", "alice-password-1")
    accounts.add("carol", "viewer", "carol-password-1")
    assert node.verify("carol", "carol-password-1") == {"login": "carol", "role": "viewer"}
    accounts.set_role("carol", "operator")
    assert node.verify("carol", "carol-password-1") == {"login": "carol", "role": "operator"}
    accounts.passwd("carol", "carol-password-2")
    assert node.verify("carol", "carol-password-1") is None and node.verify("carol", "carol-password-2")
    accounts.remove("carol")
    assert node.verify("carol", "carol-password-2") is None
    assert node.verify("alice", "alice-password-1")
    assert node.ask(op="changes") == 4  # every change noticed once (open sockets are checked again then)
    accounts.file.unlink()
    assert node.verify("alice", "alice-password-1") is None


def test_a_broken_file_lets_nobody_in_and_bad_entries_are_left_out(people):
    accounts, node = people
    accounts.file.parent.mkdir(parents=True)
    good = hash_password("alice-password-1")
    entries = {
        "alice": {"role": "operator", "hash": good},
        "Mallory": {"role": "operator", "hash": good},  # not a login name
        "root-ish": {"role": "admin", "hash": good},  # no such role
        "eve": {"role": "operator", "hash": "$6$salt$digest"},  # not a '$7$' hash
        "bob": {"role": "viewer"},
    }
    accounts.file.write_text(json.dumps({"users": entries}))
    assert node.verify("alice", "alice-password-1")
    for login in ("Mallory", "root-ish", "eve", "bob"):
        assert node.verify(login, "alice-password-1") is None, login
    log = node.ask(op="log")
    assert sum("left out" in line for line in log) == 4, log
    tmp = accounts.file.with_name("users.json.tmp")
    tmp.write_text("{not json")
    os.replace(tmp, accounts.file)
    assert node.verify("alice", "alice-password-1") is None
    assert any(line.startswith("error:") and "cannot be read" in line for line in node.ask(op="log"))


def test_the_plugin_names_the_socket_login_and_drops_what_the_browser_said(people):
    accounts, node = people
    accounts.add("alice", "operator", "alice-password-1")
    accounts.add("victor", "viewer", "victor-password-1")
    assert node.ask(op="plugins") == [
        {"id": "slowctl-accounts", "type": "node-red-dashboard-2", "hooks": ["onAddConnectionCredentials"]}
    ]
    forged = {"payload": 1, "_client": {"user": {"username": "alice", "role": "operator"}, "socketId": "x"}}
    got = node.ask(op="hook", headers=basic("victor", "victor-password-1"), msg=forged)
    assert got == {"payload": 1, "_client": {"user": {"username": "victor", "role": "viewer"}}}
    got = node.ask(op="hook", headers=basic("alice", "alice-password-1"), msg={"payload": 2})
    assert got["_client"] == {"user": {"username": "alice", "role": "operator"}}
    # a socket whose login is no longer valid: no person at all (the flows refuse its commands)
    accounts.passwd("alice", "alice-password-2")
    assert node.ask(op="hook", headers=basic("alice", "alice-password-1"), msg=forged) == {"payload": 1, "_client": {}}
