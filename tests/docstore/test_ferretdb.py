"""A real MongoDB-wire server for the document store's tests: FerretDB (built from source: tests/tools.py)
with its SQLite backend and SCRAM authentication, spoken to with pymongo.

FerretDB has no roles: `slowctl db-check`'s check that the slowctl user holds exactly readWrite needs
MongoDB's role model, which only a real MongoDB has (the compose stack's `mongo-check` job). Here that
check is shown to answer, clearly, that this server's user holds no roles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from pymongo import ASCENDING, MongoClient
from tests.tools import tool

from harness import die_with_parent, free_port, stop_process, wait_until

USER, PASSWORD, DATABASE = "slowctl", "ferretdb-test-password-0123456789", "slowctl"


@pytest.fixture(scope="module")
def ferretdb(tmp_path_factory):
    work = tmp_path_factory.mktemp("ferretdb")
    (work / "data").mkdir()
    port = free_port()
    argv = [
        str(tool("ferretdb")),
        "--handler=sqlite", f"--sqlite-url=file:{work / 'data'}/", f"--state-dir={work}",
        f"--listen-addr=127.0.0.1:{port}", f"--debug-addr=127.0.0.1:{free_port()}",
        "--telemetry=disable", "--log-level=ERROR", "--test-enable-new-auth",
        f"--setup-database={DATABASE}", f"--setup-username={USER}", f"--setup-password={PASSWORD}",
    ]  # fmt: skip
    with open(work / "ferretdb.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        client: MongoClient = MongoClient(
            f"mongodb://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}?authSource={DATABASE}",
            serverSelectionTimeoutMS=1000,
        )
        wait_until(lambda: _pings(client), 20, 0.2, "FerretDB to answer")
        yield port, client
        client.close()
    finally:
        stop_process(proc, 10)


def _pings(client: MongoClient) -> bool:
    try:
        return client[DATABASE].command("ping")["ok"] == 1.0
    except Exception:
        return False


def db_check(port: int, password: str = PASSWORD) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SLOWCTL_MONGO_HOST": "127.0.0.1",
        "SLOWCTL_MONGO_PORT": str(port),
        "SLOWCTL_MONGO_DATABASE": DATABASE,
        "SLOWCTL_MONGO_USER": USER,
        "SLOWCTL_MONGO_PASSWORD": password,
    }
    cmd = [sys.executable, "-m", "slowctl", "db-check", "--timeout", "5"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_documents_in_and_out_as_the_records_will_be(ferretdb):
    _, client = ferretdb
    events = client[DATABASE]["events"]
    events.create_index([("device", ASCENDING), ("ts", ASCENDING)])
    now = time.time()
    events.insert_many([{"device": "hv", "ts": now + i, "kind": "trip", "channel": i % 2} for i in range(5)])
    found = list(events.find({"device": "hv", "channel": 1}, {"_id": 0, "ts": 1}).sort("ts", -1))
    assert [d["ts"] for d in found] == [now + 3, now + 1]
    assert any(ix["key"] == {"device": 1, "ts": 1} for ix in events.list_indexes())


def test_db_check_authenticates_and_says_the_role_model_is_missing(ferretdb):
    port, _ = ferretdb
    r = db_check(port)
    assert r.returncode == 1
    assert f"user {USER} should hold exactly readWrite on {DATABASE}, holds []" in r.stderr, r.stderr
    # before the roles, it has made sure of the recorder's collections and their indexes
    from slowctl.records.store import INDEXES

    db = ferretdb[1][DATABASE]
    for name, wanted in INDEXES.items():
        have = [list(ix["key"].items()) for ix in db[name].list_indexes()]
        assert all(keys in have for keys in wanted), (name, have)


def test_a_wrong_password_is_refused(ferretdb):
    port, _ = ferretdb
    r = db_check(port, "wrong-password")
    assert r.returncode == 1 and "refused: Authentication failed" in r.stderr, r.stderr
