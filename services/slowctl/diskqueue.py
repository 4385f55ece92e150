"""A bounded, ordered FIFO of JSON records on disk that survives a crash or a power loss.

One writer process owns a directory. Records are appended to segment files (`<first seq>.jsonl`, one
JSON line each, on disk before `put` returns); `commit(seq)` marks everything up to `seq` as done
(an atomically replaced `head.json`), and segments wholly done are deleted. Used by the device
services (what they could not publish while the broker was away) and by the recorder (what it has
taken from the broker but not yet written to MongoDB).

What cannot be read back at open (a damaged segment) is moved aside as `<name>.corrupt-<time>` and
listed in `problems`, saying which records could not be replayed; the records before the damage and those
of other segments are kept.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slowctl.atomic import write_json

SEGMENT_BYTES = 4 * 1024 * 1024


class QueueFull(Exception):
    pass


@dataclass
class _Segment:
    first: int
    path: Path
    size: int
    last: int  # seq of its last record (first - 1 when empty)


class DiskQueue:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max_bytes)
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._committed = self._read_head()
        self._segments: list[_Segment] = []
        # not yet committed, in order (kept in memory: it is bounded); a deque: commits take from the left
        self._pending: deque[tuple[int, Any]] = deque()
        self._open_segments()
        self._file: Any = None

    # --- state ------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments)

    @property
    def fill(self) -> float:
        """How full, 0..1, counting the segments on disk (done records leave when their segment does)."""
        return self.size_bytes / self.max_bytes

    @property
    def next_seq(self) -> int:
        with self._lock:
            return self._next_seq()

    def _next_seq(self) -> int:
        return (self._segments[-1].last if self._segments else self._committed) + 1

    # --- writing ------------------------------------------------------------------------------
    def put(self, record: Any) -> int:
        """Append one record; on disk when this returns. Its seq; QueueFull when the bound is reached."""
        return self.put_many([record])[-1]

    def put_many(self, records: list[Any]) -> list[int]:
        """Append records with one disk sync; all or none (QueueFull)."""
        lines = [json.dumps(r, separators=(",", ":"), default=str) for r in records]
        with self._lock:
            seqs = list(range(self._next_seq(), self._next_seq() + len(lines)))
            encoded = "".join(f"[{s},{line}]\n" for s, line in zip(seqs, lines)).encode()
            if sum(s.size for s in self._segments) + len(encoded) > self.max_bytes:
                raise QueueFull(f"disk queue {self.dir} is full ({self.max_bytes} bytes)")
            if not self._segments or self._segments[-1].size >= self.segment_bytes:
                self._new_segment(seqs[0])
            seg = self._segments[-1]
            if self._file is None or self._file.name != str(seg.path):
                self._close_file()
                self._file = open(seg.path, "ab")
            try:
                self._file.write(encoded)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError:
                # a partial write (a full disk) must not leave a torn line for the next record to follow
                self._close_file()
                os.truncate(seg.path, seg.size)
                raise
            seg.size += len(encoded)
            seg.last = seqs[-1]
            self._pending.extend(zip(seqs, records))
            return seqs

    def _new_segment(self, first: int) -> None:
        path = self.dir / f"{first:016d}.jsonl"
        path.touch()
        _sync_dir(self.dir)
        self._segments.append(_Segment(first, path, 0, first - 1))

    # --- reading ------------------------------------------------------------------------------
    def peek(self, n: int) -> list[tuple[int, Any]]:
        """The oldest `n` records not yet committed, with their seq."""
        with self._lock:
            return list(itertools.islice(self._pending, n))

    def commit(self, seq: int) -> None:
        """Everything up to and including `seq` is done: it is not given out again, also after a restart."""
        with self._lock:
            if seq <= self._committed:
                return
            self._committed = seq
            write_json(self.dir / "head.json", {"committed": seq})
            while self._pending and self._pending[0][0] <= seq:
                self._pending.popleft()
            while (
                self._segments
                and self._segments[0].last <= seq
                and (len(self._segments) > 1 or self._segments[0].size >= self.segment_bytes or not self._pending)
            ):
                seg = self._segments.pop(0)
                if self._file is not None and self._file.name == str(seg.path):
                    self._close_file()
                seg.path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # --- opening ------------------------------------------------------------------------------
    def _read_head(self) -> int:
        head = self.dir / "head.json"
        if not head.exists():
            return 0
        try:
            committed = json.loads(head.read_text())["committed"]
            if not isinstance(committed, int) or committed < 0:
                raise ValueError(f"committed {committed!r}")
            return committed
        except (ValueError, KeyError, TypeError) as exc:
            # replaying twice is better than dropping: the consumers write idempotently
            self._aside(head, f"its head file could not be read ({exc}); records are replayed from the oldest")
            return 0

    def _open_segments(self) -> None:
        found = sorted((int(p.stem), p) for p in self.dir.glob("*.jsonl") if p.stem.isdigit())
        # where the next segment must start; None when not known (no head, or after a damaged segment,
        # whose unreadable records took numbers too)
        expected: int | None = self._committed + 1 if self._committed else None
        for first, path in found:
            records, damage, unreadable = _read_segment(path, first)
            overlap = damage is None and bool(self._segments) and expected is not None and first < expected
            if damage is not None or overlap:
                start = expected if overlap else None
                kept = [(s, r) for s, r in records if s > self._committed and (start is None or s >= start)]
                if overlap:
                    why = f"starts at record {first}, which the segment before holds; the {len(kept)} records after those are replayed"
                else:
                    lost_from = records[-1][0] + 1 if records else first
                    why = (
                        f"{damage}; {unreadable} record(s) from {lost_from} on could not be replayed, "
                        f"the {len(kept)} before the damage are"
                    )
                self._aside(path, why)
                if kept:  # what could be read is not thrown away: rewritten as a sound segment
                    self._rewrite(kept)
                expected = (kept[-1][0] + 1 if kept else expected) if overlap else None
                continue
            if expected is not None and first > expected:
                self.problems.append(f"records {expected}..{first - 1} are missing from {self.dir}")
            last = records[-1][0] if records else first - 1
            self._segments.append(_Segment(first, path, path.stat().st_size, last))
            self._pending.extend((s, r) for s, r in records if s > self._committed)
            expected = last + 1

    def _rewrite(self, kept: list[tuple[int, Any]]) -> None:
        path = self.dir / f"{kept[0][0]:016d}.jsonl"
        data = "".join(f"[{s},{json.dumps(r, separators=(',', ':'), default=str)}]\n" for s, r in kept).encode()
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._segments.append(_Segment(kept[0][0], path, len(data), kept[-1][0]))
        self._pending.extend(kept)

    def _aside(self, path: Path, why: str) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for n in itertools.count(2):  # never over an earlier one (two in the same second)
            if not aside.exists():
                break
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{n}")
        os.replace(path, aside)
        self.problems.append(f"{path.name}: {why}; kept aside as {aside.name}")


def _read_segment(path: Path, first: int) -> tuple[list[tuple[int, Any]], str | None, int]:
    """Its records in order, what is wrong with it (None when sound), and how many lines from the damage on."""
    records: list[tuple[int, Any]] = []
    expected = first
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("torn last line (the writer stopped mid-record)")
                seq, record = json.loads(raw)
                if seq != expected:
                    raise ValueError(f"record {seq} where {expected} was expected")
            except (ValueError, TypeError) as exc:
                return records, f"line {number} unreadable: {str(exc)[:120]}", 1 + sum(1 for _ in f)
            records.append((seq, record))
            expected += 1
    return records, None, 0


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
