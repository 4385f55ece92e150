"""The device service's outbox: the metrics and events it could not publish yet, in order, bounded, on disk.

While the broker is connected and nothing waits, a message goes out at once; while it is away, or while
older messages still wait (order), it is appended to a `DiskQueue` (`<state_dir>/<device>.outbox/`),
which survives a restart of the service. The adapter drains it once the broker is back, oldest first,
and commits what the broker acknowledged. Metrics lines carry their own timestamps, events theirs: a
message published late still says when it happened. The retained status is never kept here (only the
latest counts; the adapter publishes it at every connect).

When the bound is reached new messages are not kept: they are counted, and the first message that fits
again is preceded by an `outbox_full` event saying how many were lost and over which time span. What the
queue could not read back at start (a damaged file, kept aside) becomes an `outbox_damaged` event.

MQTT-free and thread-free: `publish` is a callable, and the caller serializes the calls (the adapter
holds a lock around each). Without a state directory (unit tests) the queue is in memory, with the same
bound and the same order, and does not survive a restart.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from slowctl.device.events import Event
from slowctl.device.payloads import event_line
from slowctl.diskqueue import DiskQueue, QueueFull

log = logging.getLogger(__name__)

METRICS, EVENT = "metrics", "event"  # which topic of the device a message goes to
Message = tuple[str, str]  # (METRICS or EVENT, payload)
Publish = Callable[[str, str], bool]  # True when the MQTT client has taken the message


class Queue(Protocol):
    problems: list[str]

    def put_many(self, records: list[Any]) -> list[int]: ...
    def peek(self, n: int) -> list[tuple[int, Any]]: ...
    def commit(self, seq: int) -> None: ...
    def close(self) -> None: ...
    def __len__(self) -> int: ...


class MemoryQueue:
    """The DiskQueue interface in memory, bounded by the same measure (the records' JSON size)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.problems: list[str] = []
        self._records: deque[tuple[int, Any, int]] = deque()
        self._bytes = 0
        self._next = 1

    def __len__(self) -> int:
        return len(self._records)

    def put_many(self, records: list[Any]) -> list[int]:
        sizes = [len(json.dumps(r, separators=(",", ":"), default=str)) + 1 for r in records]
        if self._bytes + sum(sizes) > self.max_bytes:
            raise QueueFull(f"outbox in memory is full ({self.max_bytes} bytes)")
        seqs = list(range(self._next, self._next + len(records)))
        self._records.extend(zip(seqs, records, sizes))
        self._bytes += sum(sizes)
        self._next += len(records)
        return seqs

    def peek(self, n: int) -> list[tuple[int, Any]]:
        return [(s, r) for s, r, _ in itertools.islice(self._records, n)]

    def commit(self, seq: int) -> None:
        while self._records and self._records[0][0] <= seq:
            self._bytes -= self._records.popleft()[2]

    def close(self) -> None:
        pass


def event_messages(e: Event) -> list[Message]:
    """An event as published: its JSON on the event topic and its line on the metrics topic (the archive)."""
    return [(EVENT, e.payload()), (METRICS, event_line(e))]


class Outbox:
    def __init__(self, queue: Queue, device: str, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.queue = queue
        self.device = device
        self.max_bytes = max_bytes
        self.clock = clock
        self.lost_metrics = 0  # metrics messages not kept since the last report (event lines not counted)
        self.lost_events = 0
        self.lost_span: tuple[float, float] | None = None  # when the first and the last of them came
        self._store_error: str | None = None  # why the last message could not be kept (None: it was)
        self._lost_because = ""

    @classmethod
    def open(cls, directory: Path | None, max_bytes: int, device: str) -> Outbox:
        """On disk in `directory`; in memory without one, or when the directory cannot be used (said at start)."""
        if directory is None:
            return cls(MemoryQueue(max_bytes), device, max_bytes)
        try:
            queue: Queue = DiskQueue(directory, max_bytes)
        except OSError as exc:
            queue = MemoryQueue(max_bytes)
            queue.problems.append(f"cannot use {directory} ({exc}): kept in memory only, lost at a restart")
        return cls(queue, device, max_bytes)

    def __len__(self) -> int:
        return len(self.queue)

    @property
    def lost(self) -> int:
        return self.lost_metrics + self.lost_events

    def start_events(self) -> list[Event]:
        """What could not be replayed from the last run (the queue's problems at open), as one event."""
        if not self.queue.problems:
            return []
        return [
            Event(
                self.device,
                "outbox_damaged",
                "outbox: part of what waited for the broker could not be replayed: " + "; ".join(self.queue.problems),
                after=list(self.queue.problems),
                cause="service start",
            )
        ]

    # --- writing ------------------------------------------------------------------------------
    def offer(self, messages: list[Message], publish: Publish | None) -> None:
        """Publish now (`publish` given: the broker is connected) when nothing waits, else keep in order.

        A message `publish` does not take (the client's own queue is full) is kept, with all after it.
        `offer([], publish)` only reports what was lost, if anything was.
        """
        loss = self._loss_event()
        report = event_messages(loss) if loss else []
        batch = report + messages
        if publish is not None and len(self.queue) == 0:
            done = 0
            while done < len(batch) and publish(*batch[done]):
                done += 1
            if loss and done >= len(report):
                self._reported(loss)
                report = []
            else:
                report = report[done:]
            batch = batch[done:]
        if not batch:
            return
        try:
            self.queue.put_many([list(m) for m in batch])
        except (QueueFull, OSError) as exc:  # OSError: the disk is full or gone
            self._count_lost(batch[len(report) :], exc)
            return
        self._store_error = None
        if loss:
            self._reported(loss)

    def _count_lost(self, messages: list[Message], exc: Exception) -> None:
        if not messages:
            return
        why = str(exc)
        if why != self._store_error:  # once per cause, not once per poll
            log.warning("outbox: %s; new metrics and events are not kept until there is room", why)
            self._store_error = why
        self._lost_because = why
        now = self.clock()
        self.lost_span = (self.lost_span[0] if self.lost_span else now, now)
        self.lost_events += sum(1 for kind, _ in messages if kind == EVENT)
        self.lost_metrics += sum(1 for kind, p in messages if kind == METRICS and not p.startswith("event,"))

    def _loss_event(self) -> Event | None:
        """The report of what was not kept, to go out before the next message that fits."""
        if not self.lost or self.lost_span is None:
            return None
        first, last = self.lost_span
        return Event(
            self.device,
            "outbox_full",
            f"outbox: {self.lost_metrics} metrics messages and {self.lost_events} events from {_iso(first)} "
            f"to {_iso(last)} ({last - first:.0f} s) were not kept ({self._lost_because})",
            after={
                "metrics": self.lost_metrics,
                "events": self.lost_events,
                "from": int(first * 1000),
                "to": int(last * 1000),
            },
            cause="outbox full",
        )

    def _reported(self, e: Event) -> None:
        log.warning("event %s: %s", e.kind, e.message)
        self.lost_metrics = self.lost_events = 0
        self.lost_span = None

    # --- draining -----------------------------------------------------------------------------
    def peek(self, n: int) -> list[tuple[int, Message]]:
        """The oldest `n` waiting messages with their sequence numbers."""
        return [(seq, (str(r[0]), str(r[1]))) for seq, r in self.queue.peek(n)]

    def commit(self, seq: int) -> None:
        """Everything up to `seq` reached the broker: not given out again, also after a restart."""
        self.queue.commit(seq)

    def close(self) -> None:
        self.queue.close()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
