"""PriorityLock: commands (exclusive) go before the poller's next transaction."""

import threading
import time

import pytest

from slowctl.drivers.link import PriorityLock


def in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_transaction_blocks_while_another_thread_is_exclusive():
    lock = PriorityLock()
    held, release, entered = threading.Event(), threading.Event(), threading.Event()

    def commander():
        with lock.exclusive():
            held.set()
            release.wait(5)

    def poller():
        with lock.transaction():
            entered.set()

    c = in_thread(commander)
    assert held.wait(2)
    p = in_thread(poller)
    assert not entered.wait(0.3), "a transaction ran while another thread held the lock exclusively"
    release.set()
    assert entered.wait(2)
    c.join(2)
    p.join(2)


def test_exclusive_blocks_while_a_transaction_runs():
    lock = PriorityLock()
    inside, release, got = threading.Event(), threading.Event(), threading.Event()

    def poller():
        with lock.transaction():
            inside.set()
            release.wait(5)

    def commander():
        with lock.exclusive():
            got.set()

    in_thread(poller)
    assert inside.wait(2)
    in_thread(commander)
    assert not got.wait(0.2)
    release.set()
    assert got.wait(2)


def test_waiting_exclusive_goes_before_the_pollers_next_transaction():
    """The poller loops transactions back to back; a command waits at most one of them."""
    lock = PriorityLock()
    stop = threading.Event()
    count = [0]
    in_transaction = threading.Event()

    def poller():
        while not stop.is_set():
            with lock.transaction():
                in_transaction.set()
                time.sleep(0.005)
                count[0] += 1

    p = in_thread(poller)
    try:
        assert in_transaction.wait(2)
        worst = 0
        for _ in range(30):
            time.sleep(0.003)
            before = count[0]
            t0 = time.monotonic()
            with lock.exclusive():
                waited = count[0] - before
                frozen = count[0]
                time.sleep(0.02)  # the poller must not run while we hold it
                assert count[0] == frozen
            worst = max(worst, waited)
            assert time.monotonic() - t0 < 1.0
        assert worst <= 1, f"exclusive waited for {worst} poller transactions"
    finally:
        stop.set()
        p.join(2)
    assert not p.is_alive()


def test_transactions_inside_exclusive_are_reentrant():
    lock = PriorityLock()
    done = threading.Event()

    def commander():
        with lock.exclusive():
            with lock.transaction():
                with lock.transaction():
                    pass
            with lock.exclusive():
                with lock.transaction():
                    pass
        done.set()

    t = in_thread(commander)
    t.join(2)
    assert done.is_set(), "deadlock: transaction inside exclusive in the same thread"


def test_reentrant_while_another_exclusive_waits():
    """The command thread holds the lock and reads back through transactions while another command waits."""
    lock = PriorityLock()
    held, second_waiting, done, second_got = (threading.Event() for _ in range(4))

    def first():
        with lock.exclusive():
            held.set()
            assert second_waiting.wait(2)
            time.sleep(0.05)  # the second one is now blocked, _waiting > 0
            with lock.transaction():
                pass
        done.set()

    def second():
        assert held.wait(2)
        second_waiting.set()
        with lock.exclusive():
            second_got.set()

    a, b = in_thread(first), in_thread(second)
    a.join(3)
    b.join(3)
    assert done.is_set(), "deadlock: the holder's own transaction waited for a queued exclusive"
    assert second_got.is_set()


def test_lock_released_after_exception():
    lock = PriorityLock()
    with pytest.raises(RuntimeError):
        with lock.exclusive():
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with lock.transaction():
            raise RuntimeError("boom")
    ok = threading.Event()

    def other():
        with lock.transaction():
            with lock.transaction():
                pass
        with lock.exclusive():
            ok.set()

    in_thread(other).join(2)
    assert ok.is_set()


def test_exclusive_waiter_count_returns_to_zero():
    lock = PriorityLock()
    with lock.exclusive():
        pass
    # no waiter left behind: a transaction from another thread gets in at once
    got = threading.Event()

    def poller():
        with lock.transaction():
            got.set()

    in_thread(poller)
    assert got.wait(1)
    assert lock._waiting == 0
