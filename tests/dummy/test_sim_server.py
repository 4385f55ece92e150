"""SimulatorServer transport: TCP clients, bad input, pty, baud emulation, stop."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest

from slowctl_dummy.base import Instrument
from slowctl_dummy.server import SimulatorServer
from slowctl_dummy.sims.caen_n1470 import CaenN1470
from slowctl_dummy.sims.climate import ClimateBox


class Fixed(Instrument):
    """Replies 15 characters + LF to anything: a 16-byte reply."""

    model = "climate"  # any registered name; only used in messages

    def step(self, dt: float) -> None:
        pass

    def respond(self, line: str) -> str | None:
        return "ABCDEFGHIJKLMNO"


def test_many_concurrent_clients(serve, connect):
    server = serve(ClimateBox(seed=1, channels=5))
    errors: list[object] = []

    def worker() -> None:
        client = connect(server)
        try:
            for _ in range(20):
                if client.ask("NSENS?") != b"5\n":
                    errors.append("bad reply")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []


def test_split_and_joined_lines_blank_lines(serve, connect):
    client = connect(serve(ClimateBox(seed=1)))
    client.send(b"NSE")
    time.sleep(0.02)
    client.send(b"NS?\r\n\n\r\n*IDN?\nNSENS?\n")
    assert client.read() == b"2\n"
    assert client.read() == b"SLOWCTL,CLIMATE,0001,1.0\n"
    assert client.read() == b"2\n"


def test_garbage_bytes_get_an_error_reply(serve, connect):
    client = connect(serve(ClimateBox(seed=1)))
    client.send(b"\xff\xfe\x00READ?\n")
    assert client.read() == b"ERR 1 unknown command\n"
    caen = connect(serve(CaenN1470(seed=1)))
    caen.send(b"$BD:00,CMD:MON,CH:\xc3\x28,PAR:VSET\r\n")
    assert caen.read() == b"#BD:00,CH:ERR\r\n"


def test_overlong_line_is_dropped(serve, connect):
    client = connect(serve(ClimateBox(seed=1)))
    client.send(b"READ?" + b"x" * 5000)  # no terminator yet: buffered, then dropped
    time.sleep(0.05)
    client.send(b"y" * 3000 + b"\nNSENS?\n")  # tail of the long line is dropped too
    assert client.read() == b"2\n"
    client.send(b"z" * 4100 + b"\n*IDN?\n")  # long line in one piece
    assert client.read() == b"SLOWCTL,CLIMATE,0001,1.0\n"


def test_client_disconnects_do_not_hurt(serve, connect):
    server = serve(ClimateBox(seed=1))
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"READ?\nREAD?\nREA")  # hang up with replies pending and half a line
        s.close()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.sendall(b"READ?\n")
    s.close()  # RST
    assert connect(server).ask("NSENS?") == b"2\n"


def test_pty_serves_a_line(serve, connect):
    server = serve(ClimateBox(seed=1), pty=True)
    assert server.pty_path and server.pty_path.startswith("/dev/")
    fd = os.open(server.pty_path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"*IDN?\r\n")
        reply = b""
        deadline = time.monotonic() + 2
        while not reply.endswith(b"\n") and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                reply += os.read(fd, 100)
        assert reply == b"SLOWCTL,CLIMATE,0001,1.0\n"
    finally:
        os.close(fd)
    # TCP is served at the same time
    assert connect(server).ask("NSENS?") == b"2\n"


def roundtrip(client) -> float:
    client.ask("X")  # warm-up
    start = time.perf_counter()
    assert client.ask("X") == b"ABCDEFGHIJKLMNO\n"
    return time.perf_counter() - start


def test_baud_emulation_delays_replies(serve, connect):
    slow = roundtrip(connect(serve(Fixed(), baud=9600)))
    # 2 request bytes + 16 reply bytes at 10 bits each: 18.75 ms; the reply alone 16.7 ms
    assert 0.0167 <= slow < 0.5
    assert roundtrip(connect(serve(Fixed()))) < slow


def test_stop_is_prompt_and_closes_clients(connect):
    server = SimulatorServer(ClimateBox(seed=1), pty=True).start()
    client = connect(server)
    assert client.ask("NSENS?") == b"2\n"
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 0.5
    with pytest.raises(ConnectionError):
        client.read(timeout=1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=0.5)
    server.stop()  # idempotent


def test_port_in_use_raises(serve):
    server = serve(ClimateBox(seed=1))
    with pytest.raises(OSError):
        SimulatorServer(ClimateBox(), port=server.port).start()
