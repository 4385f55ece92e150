"""Serve one simulated instrument on TCP (many clients) and optionally a pty.

All transport plumbing lives here; instruments only map request lines to
reply bytes.  Threads: one acceptor, one per TCP client, one for the pty.
Every blocking wait also watches a wake-up pipe, so ``stop()`` returns at once.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable

from .base import Instrument

log = logging.getLogger(__name__)

MAX_LINE = 4096  # bytes; longer request lines are dropped whole
_SEND_TIMEOUT = 2.0  # s; a client that never reads is disconnected


class LineSplitter:
    """Cut a byte stream into request lines; drop lines longer than MAX_LINE."""

    def __init__(self, terminator: bytes) -> None:
        self.sep = terminator[-1:]
        self.buf = b""
        self.discarding = False  # inside an over-long line: skip to its end

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        lines = []
        while (i := self.buf.find(self.sep)) >= 0:
            line, self.buf = self.buf[: i + 1], self.buf[i + 1 :]
            if self.discarding or len(line) > MAX_LINE:
                self.discarding = False
                continue
            lines.append(line)
        if len(self.buf) > MAX_LINE:
            self.buf, self.discarding = b"", True
        return lines


class SimulatorServer:
    """Serve ``instrument`` on ``host:port`` (0 = ephemeral) and, if ``pty``, a pseudo-terminal."""

    def __init__(
        self,
        instrument: Instrument,
        host: str = "127.0.0.1",
        port: int = 0,
        pty: bool = False,
        baud: int | None = None,
    ) -> None:
        if baud is not None and baud <= 0:
            raise ValueError(f"baud: must be > 0, got {baud}")
        self.instrument = instrument
        self.host = host
        self.port = port
        self.baud = baud
        self.pty_path: str | None = None
        self._want_pty = pty
        self._lock = threading.Lock()  # one instrument, one request at a time
        self._stopped = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._sock: socket.socket | None = None
        self._pty_fds: tuple[int, int] | None = None
        self._wake_r, self._wake_w = -1, -1

    # --- lifecycle --------------------------------------------------------------
    def start(self) -> SimulatorServer:
        if self._sock is not None:
            raise RuntimeError("server already started")
        self._wake_r, self._wake_w = os.pipe()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(16)
        except OSError:
            sock.close()
            self._close_wake()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._spawn(self._accept_loop, "accept")
        if self._want_pty:
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no CR/LF translation: a clean serial line
            os.set_blocking(master, False)  # never block on a pty nobody reads
            self._pty_fds = (master, slave)
            self.pty_path = os.ttyname(slave)
            self._spawn(self._pty_loop, "pty")
        return self

    def stop(self) -> None:
        """Close everything and join all threads; safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")  # wakes every select() at once
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # loop: a client thread may start late
            with self._threads_lock:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            if not threads:
                break
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._sock is not None:
            self._sock.close()
        with self._threads_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            conn.close()
        if self._pty_fds is not None:
            for fd in self._pty_fds:
                os.close(fd)
            self._pty_fds = None
        self._close_wake()

    def serve_forever(self) -> None:
        """Start if needed and block until ``stop()`` is called (e.g. from a signal handler)."""
        if self._sock is None:
            self.start()
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------
    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._threads_lock:
                    self._threads.discard(threading.current_thread())

        t = threading.Thread(target=run, name=f"sim-{self.instrument.model}-{name}", daemon=True)
        with self._threads_lock:
            self._threads.add(t)
        t.start()

    def _wait_readable(self, fd: int) -> bool:
        """Block until ``fd`` is readable; False when the server is stopping."""
        poller = select.poll()  # poll, not select: no FD_SETSIZE limit with many clients
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            ready = poller.poll()
        except OSError:
            return False
        return not self._stopped.is_set() and any(f == fd for f, _ in ready)

    def _wire_delay(self, nbytes: int) -> None:
        if self.baud:
            time.sleep(nbytes * 10 / self.baud)  # 8N1: 10 bits per byte

    def _answer(self, raw: bytes) -> bytes | None:
        self._wire_delay(len(raw))
        line = raw[:-1]
        if raw.endswith(b"\n"):
            line = line.removesuffix(b"\r")
        text = line.decode("utf-8", "replace")  # garbage gets the instrument's error reply
        if not text.strip():
            return None
        with self._lock:
            try:
                reply = self.instrument.handle(text)
            except Exception:  # a simulator bug must not kill the connection
                log.exception("%s: error handling %r", self.instrument.model, text)
                return None
        if reply:
            self._wire_delay(len(reply))
        return reply

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while self._wait_readable(self._sock.fileno()):
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            if self._stopped.is_set():
                conn.close()
                return
            conn.settimeout(_SEND_TIMEOUT)
            with self._threads_lock:
                self._conns.add(conn)
            self._spawn(self._client_loop, "client", conn)

    def _client_loop(self, conn: socket.socket) -> None:
        splitter = LineSplitter(self.instrument.request_terminator)
        try:
            while self._wait_readable(conn.fileno()):
                data = conn.recv(4096)
                if not data:
                    return  # client hung up
                for raw in splitter.feed(data):
                    reply = self._answer(raw)
                    if reply and not self._stopped.is_set():
                        conn.sendall(reply)
        except OSError:
            pass  # reset / send timeout: drop this client only
        finally:
            with self._threads_lock:
                self._conns.discard(conn)
            conn.close()

    def _pty_loop(self) -> None:
        assert self._pty_fds is not None
        master = self._pty_fds[0]
        splitter = LineSplitter(self.instrument.request_terminator)
        while self._wait_readable(master):
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            for raw in splitter.feed(data):
                reply = self._answer(raw)
                if reply:
                    try:
                        os.write(master, reply)
                    except BlockingIOError:
                        pass  # nobody reads the pty and its buffer is full: a lost reply
