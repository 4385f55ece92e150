"""MongoDB, the store for what is not a time series: the connection check of the slowctl image, and the
writer that moves a service's on-disk journal into it (the recorder's, the procedure runner's).

`slowctl db-check` connects as the least-privilege user, proves it can write and
read the slowctl database (the collections of the recorder and of the procedure
runner, with their indexes), and that it holds no more than readWrite on it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from slowctl.diskqueue import DiskQueue

PREFIX = "SLOWCTL_MONGO_"


class DocstoreError(Exception):
    pass


@dataclass(frozen=True)
class MongoSettings:
    host: str
    port: int
    database: str
    user: str
    password: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> MongoSettings:
        missing = [k for k in ("DATABASE", "USER", "PASSWORD") if not env.get(PREFIX + k)]
        if missing:
            raise DocstoreError("not set: " + ", ".join(PREFIX + k for k in missing))
        port = env.get(PREFIX + "PORT", "27017")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise DocstoreError(f"{PREFIX}PORT: expected a port number, got {port!r}")
        return cls(
            env.get(PREFIX + "HOST", "127.0.0.1"),
            int(port),
            env[PREFIX + "DATABASE"],
            env[PREFIX + "USER"],
            env[PREFIX + "PASSWORD"],
        )

    @property
    def uri(self) -> str:
        return (
            f"mongodb://{quote_plus(self.user)}:{quote_plus(self.password)}@{self.host}:{self.port}/"
            f"{self.database}?authSource={self.database}"
        )

    def connect(self) -> tuple[Any, Any]:
        """(client, database) for a service's own thread: it gives up on an unreachable server within seconds,
        and the service says so and tries again."""
        from pymongo import MongoClient

        client: MongoClient = MongoClient(self.uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000)
        return client, client[self.database]


def check_records(db: Any) -> str:
    """The collections of the recorder and of the procedure runner: their indexes in place (made here if
    missing: readWrite may), and a document written, read back and removed in each."""
    from slowctl.records import procedures, store

    store.ensure_indexes(db)
    procedures.ensure_indexes(db)
    wanted_indexes = {**store.INDEXES, **procedures.INDEXES}
    for name, wanted in wanted_indexes.items():
        have = [list(ix["key"].items()) for ix in db[name].list_indexes()]
        missing = [keys for keys in wanted if [(k, d) for k, d in keys] not in have]
        if missing:
            raise DocstoreError(f"collection {name}: indexes missing after creating them: {missing}")
        doc_id = db[name].insert_one({"check": True, "ts": time.time()}).inserted_id
        found = db[name].find_one({"_id": doc_id}) is not None
        db[name].delete_one({"_id": doc_id})
        if not found:
            raise DocstoreError(f"collection {name}: a document written could not be read back")
    return f"collections {', '.join(wanted_indexes)} ok"


def check(settings: MongoSettings, timeout: float = 5.0) -> str:
    """A one-line summary when the database works as the slowctl user should see it; DocstoreError otherwise."""
    from pymongo import MongoClient
    from pymongo.errors import OperationFailure, PyMongoError

    client: MongoClient = MongoClient(
        settings.uri, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000)
    )
    try:
        db = client[settings.database]
        t0 = time.monotonic()
        db.command("ping")
        records = check_records(db)
        status = db.command("connectionStatus")["authInfo"]
        roles = sorted((r["role"], r["db"]) for r in status["authenticatedUserRoles"])
        if roles != [("readWrite", settings.database)]:
            raise DocstoreError(
                f"user {settings.user} should hold exactly readWrite on {settings.database}, holds {roles}"
            )
        probe = db["_check"]
        doc_id = probe.insert_one({"check": True, "at": time.time()}).inserted_id
        found = probe.find_one({"_id": doc_id}) is not None
        probe.delete_one({"_id": doc_id})
        if not found:
            raise DocstoreError("a document written could not be read back")
        return (
            f"mongodb {settings.host}:{settings.port}/{settings.database} as {settings.user}: "
            f"read/write ok, {records}, roles {roles}, {1000 * (time.monotonic() - t0):.0f} ms"
        )
    except OperationFailure as exc:
        raise DocstoreError(f"refused: {exc.details.get('errmsg', exc) if exc.details else exc}") from None
    except PyMongoError as exc:
        raise DocstoreError(
            f"cannot reach mongodb at {settings.host}:{settings.port}: {str(exc).split(' (configured timeouts')[0]}"
        ) from None
    finally:
        client.close()


Batch = list[tuple[int, Any]]


def drain_journal(
    journal: DiskQueue,
    settings: MongoSettings,
    stop: threading.Event,
    news: threading.Event,
    prepare: Callable[[Any], None],
    write: Callable[[Any, Batch], None],
    failed: Callable[[Exception], None],
    written: Callable[[Batch, bool], None],
    batch_size: int = 500,
) -> None:
    """Moves `journal` into MongoDB in order until `stop` (and the journal is empty): `prepare(db)` once
    (indexes), `write(db, batch)` per batch, committed only when it returns. While a write fails the batch
    stays in the journal and is tried again with a growing pause; `failed(exc)` is told each time,
    `written(batch, recovered)` after each commit (`recovered`: the first after a failure)."""
    client, db = settings.connect()
    prepared, failing, backoff = False, False, 0.5
    try:
        while not stop.is_set() or len(journal):
            batch = journal.peek(batch_size)
            if not batch:
                if stop.is_set():
                    break
                news.wait(1.0)
                news.clear()
                continue
            try:
                if not prepared:
                    prepare(db)
                    prepared = True
                write(db, batch)
            except Exception as exc:  # the writer never dies: what it cannot write stays in the journal
                failing = True
                failed(exc)
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, 5.0)
                continue
            journal.commit(batch[-1][0])
            backoff = 0.5
            written(batch, failing)
            failing = False
    finally:
        client.close()
