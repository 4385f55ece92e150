"""The on-disk queue of the device services and the recorder: order, bound, restart, damage."""

from __future__ import annotations

import pytest

from slowctl.diskqueue import DiskQueue, QueueFull


def test_records_come_back_in_order_and_survive_a_restart(tmp_path):
    q = DiskQueue(tmp_path, 1_000_000)
    seqs = [q.put({"n": i}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    q.commit(2)
    q.close()
    again = DiskQueue(tmp_path, 1_000_000)
    assert again.peek(10) == [(3, {"n": 2}), (4, {"n": 3}), (5, {"n": 4})]
    assert again.put({"n": 5}) == 6
    assert again.problems == []


def test_committed_segments_are_deleted_and_numbering_goes_on(tmp_path):
    q = DiskQueue(tmp_path, 1_000_000, segment_bytes=50)
    for i in range(20):
        q.put({"n": i})
    assert len(list(tmp_path.glob("*.jsonl"))) > 2
    q.commit(20)
    assert list(tmp_path.glob("*.jsonl")) == [] and len(q) == 0 and q.size_bytes == 0
    q.close()
    again = DiskQueue(tmp_path, 1_000_000, segment_bytes=50)
    assert again.put("next") == 21 and again.peek(5) == [(21, "next")]


def test_the_bound_refuses_and_keeps_what_it_has(tmp_path):
    q = DiskQueue(tmp_path, 200)
    n = 0
    with pytest.raises(QueueFull):
        while True:
            q.put({"payload": "x" * 20})
            n += 1
    assert n > 0 and len(q) == n and q.fill <= 1.0
    with pytest.raises(QueueFull):
        q.put_many([{"a": 1}] * 100)  # all or nothing
    assert len(q) == n
    q.commit(n)
    assert q.put({"after": True}) == n + 1  # room again


def test_a_damaged_segment_is_kept_aside_and_what_was_readable_is_replayed(tmp_path):
    q = DiskQueue(tmp_path, 1_000_000)
    for i in range(3):
        q.put({"n": i})
    q.close()
    (segment,) = tmp_path.glob("*.jsonl")
    segment.write_bytes(segment.read_bytes() + b'[4,{"n":3}]\n[5,{"broken\n')
    again = DiskQueue(tmp_path, 1_000_000)
    assert [r["n"] for _, r in again.peek(10)] == [0, 1, 2, 3]
    assert len(again.problems) == 1 and "line 5 unreadable" in again.problems[0], again.problems
    assert list(tmp_path.glob("*.corrupt-*")), "the damaged file is kept for a person to look at"
    assert again.put({"n": 4}) == 5


def test_a_torn_last_line_is_reported(tmp_path):
    q = DiskQueue(tmp_path, 1_000_000)
    q.put("whole")
    q.close()
    (segment,) = tmp_path.glob("*.jsonl")
    with open(segment, "ab") as f:
        f.write(b'[2,"hal')
    again = DiskQueue(tmp_path, 1_000_000)
    assert again.peek(5) == [(1, "whole")]
    assert "torn last line" in again.problems[0]


def test_an_unreadable_head_replays_from_the_oldest(tmp_path):
    q = DiskQueue(tmp_path, 1_000_000)
    q.put("a")
    q.put("b")
    q.commit(1)
    q.close()
    (tmp_path / "head.json").write_text("{not json")
    again = DiskQueue(tmp_path, 1_000_000)
    assert [r for _, r in again.peek(5)] == ["a", "b"]
    assert "head file could not be read" in again.problems[0]


def test_damage_in_one_segment_says_what_is_lost_and_keeps_the_next_segment_as_it_is(tmp_path):
    q = DiskQueue(tmp_path, 1_000_000, segment_bytes=40)
    for i in range(6):
        q.put({"n": i})
    q.close()
    first, second, *_ = sorted(tmp_path.glob("*.jsonl"))
    lines = first.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 2
    first.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[2:]))
    again = DiskQueue(tmp_path, 1_000_000, segment_bytes=40)
    lost = len(lines) - 1
    assert [r["n"] for _, r in again.peek(10)] == [0, *range(len(lines), 6)]
    (problem,) = again.problems  # the gap after the damage is the damage, not a second problem
    assert f"{lost} record(s) from 2 on could not be replayed" in problem, problem
    assert second.exists(), "a sound segment stays where it is"
    assert again.put({"n": 6}) == 7


def test_two_damages_in_the_same_second_keep_both_files(tmp_path):
    for _ in range(2):
        q = DiskQueue(tmp_path, 1_000_000)
        q.put("x")
        q.close()
        (segment,) = tmp_path.glob("*.jsonl")
        segment.write_bytes(b"\x00\n")
        DiskQueue(tmp_path, 1_000_000).close()
    assert len(list(tmp_path.glob("*.corrupt-*"))) == 2
