"""Fixtures for the simulator tests: raw-socket clients (clock and serve: tests/conftest.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from slowctl_dummy.server import SimulatorServer


class Client:
    """A raw TCP client: send a line, read one reply up to the terminator."""

    def __init__(self, port: int, terminator: bytes = b"\n", timeout: float = 2.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.terminator = terminator
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        while self.terminator not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        i = self.buf.index(self.terminator) + len(self.terminator)
        reply, self.buf = self.buf[:i], self.buf[i:]
        return reply

    def ask(self, line: str, term: bytes | None = None) -> bytes:
        """Send ``line`` + terminator, return the full reply bytes."""
        self.send(line.encode() + (self.terminator if term is None else term))
        return self.read()

    def no_reply(self, line: str, wait: float = 0.15) -> bool:
        self.send(line.encode() + self.terminator)
        try:
            self.read(timeout=wait)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def open_client(server: SimulatorServer) -> Client:
        client = Client(server.port, server.instrument.reply_terminator)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
