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


def test_the_record_is_written_once_however_often_it_is_replayed(ferretdb):
    """The recorder's writes against a real server: a replay after a crash doubles nothing, a reply
    completes its command once, a document the server refuses goes to `rejected` and blocks nothing."""
    import json
    from datetime import UTC, datetime, timedelta

    from slowctl.records.store import apply, ensure_indexes, expire, to_write

    _, client = ferretdb
    db = client[DATABASE]
    ensure_indexes(db)
    now = time.time()
    cmd = to_write(
        "slowctl", "r-cmd", "slowctl/hv/by/alice/cmd", json.dumps({"action": "off", "channel": 3, "id": "x9"}), now
    )
    reply = to_write("slowctl", "r-reply", "slowctl/hv/reply", json.dumps(
        {"id": "x9", "action": "off", "channel": 3, "by": "alice", "for": None, "ok": True, "error": None,
         "applied": "OFF", "before": "ON"}), now + 0.01)  # fmt: skip
    bad = to_write("slowctl", "r-bad", "slowctl/hv/event", json.dumps({"kind": "trip", "message": "m"}), now)
    bad.doc["cause"] = {"a\0b": 1}  # a key MongoDB cannot store
    after = to_write("slowctl", "r-after", "slowctl/hv/event", json.dumps({"kind": "trip", "message": "after"}), now)
    for _ in range(2):  # the second time: a replay of the same journal records
        rejected = apply(db, [cmd, reply, bad, after])
    assert rejected == 1
    docs = list(db["commands"].find({"id": "x9"}))
    assert len(docs) == 1 and docs[0]["outcome"] == "ok" and (docs[0]["before"], docs[0]["after"]) == ("ON", "OFF")
    assert db["events"].count_documents({"message": "after"}) == 1, "what follows a refused document is written"
    assert db["rejected"].find_one({"_id": "r-bad"})["raw"].startswith("{")
    gone = expire(db, 1, now=datetime.now(UTC) + timedelta(days=2))
    assert gone >= 2 and db["commands"].count_documents({"id": "x9"}) == 0
    assert expire(db, 0) == 0, "0: kept forever"
