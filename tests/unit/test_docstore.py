"""`slowctl db-check`: settings from the environment, and a clear answer when MongoDB is not there."""

import os
import subprocess
import sys

import pytest
from tests.harness import free_port

from slowctl.records.docstore import DocstoreError, MongoSettings, check, check_records

ENV = {"SLOWCTL_MONGO_DATABASE": "slowctl", "SLOWCTL_MONGO_USER": "slowctl", "SLOWCTL_MONGO_PASSWORD": "p@ss:/w"}


def test_settings_and_uri_escape_the_password():
    s = MongoSettings.from_env({**ENV, "SLOWCTL_MONGO_HOST": "mongo"})
    assert s.uri == "mongodb://slowctl:p%40ss%3A%2Fw@mongo:27017/slowctl?authSource=slowctl"


def test_missing_and_bad_settings_are_named():
    with pytest.raises(DocstoreError, match="not set: SLOWCTL_MONGO_USER, SLOWCTL_MONGO_PASSWORD"):
        MongoSettings.from_env({"SLOWCTL_MONGO_DATABASE": "x"})
    with pytest.raises(DocstoreError, match="SLOWCTL_MONGO_PORT: expected a port number, got 'x'"):
        MongoSettings.from_env({**ENV, "SLOWCTL_MONGO_PORT": "x"})


def test_no_server_gives_a_clear_error_quickly():
    port = free_port()
    s = MongoSettings.from_env({**ENV, "SLOWCTL_MONGO_PORT": str(port)})
    with pytest.raises(DocstoreError, match=f"cannot reach mongodb at 127.0.0.1:{port}"):
        check(s, timeout=0.5)
    r = subprocess.run(
        [sys.executable, "-m", "slowctl", "db-check", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV, "SLOWCTL_MONGO_PORT": str(port)},
        timeout=30,
    )
    assert r.returncode == 1 and r.stderr.startswith("slowctl db-check: cannot reach mongodb")
    assert "Traceback" not in r.stderr


class _Collection:
    """Just what check_records uses of a pymongo collection."""

    def __init__(self) -> None:
        self.indexes: list[list[tuple[str, int]]] = [[("_id", 1)]]
        self.docs: dict[int, dict] = {}

    def create_index(self, keys):
        if list(keys) not in self.indexes:
            self.indexes.append(list(keys))

    def list_indexes(self):
        return [{"key": dict(keys)} for keys in self.indexes]

    def insert_one(self, doc):
        doc_id = len(self.docs) + 1
        self.docs[doc_id] = doc
        return type("Inserted", (), {"inserted_id": doc_id})()

    def find_one(self, query):
        return self.docs.get(query["_id"])

    def delete_one(self, query):
        self.docs.pop(query["_id"], None)


def test_db_check_makes_sure_of_the_recorder_and_the_procedure_runner_collections():
    from slowctl.records import procedures, store

    class Db(dict):
        def __missing__(self, name):
            return self.setdefault(name, _Collection())

    db = Db()
    summary = check_records(db)
    wanted = {**store.INDEXES, **procedures.INDEXES}
    assert set(wanted) == {"commands", "events", "procedures", "procedure_points"}
    assert summary == f"collections {', '.join(wanted)} ok"
    for name, indexes in wanted.items():
        assert all(keys in db[name].indexes for keys in map(list, indexes)), name
        assert db[name].docs == {}, f"{name}: the check's document is removed"


@pytest.mark.skipif(
    not os.environ.get("SLOWCTL_MONGO_PASSWORD"),
    reason="needs a MongoDB with the slowctl user: SLOWCTL_MONGO_HOST/_PORT/_DATABASE/_USER/_PASSWORD "
    "(docs/verification.md: against the compose stack)",
)
def test_real_mongodb_as_least_privilege_user():
    summary = check(MongoSettings.from_env())
    assert "read/write ok" in summary and "roles [('readWrite'" in summary
