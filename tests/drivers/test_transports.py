"""The same drivers over the simulator's pty (a serial device path) and over VISA TCPIP SOCKET."""

from __future__ import annotations

import importlib.util
import math
import time

import pytest
from drvkit import KINDS, SHORT_TIMEOUT

from slowctl.drivers.base import SupplyDriver
from slowctl.drivers.link import LinkError, SerialLink, VisaLink

KINDS_UNDER_TEST = ["caen", "caen-allch", "hmp", "climate"]


def _exercise(drv, inst) -> None:
    """connect, read, one action whose effect shows in the simulator and the next read."""
    assert drv.connect().startswith(("CAEN N1470 serial 01470", "HAMEG,HMP4040,", "SLOWCTL,CLIMATE,"))
    for full in (True, False):
        assert sorted(drv.read(drv.channels, full=full)) == drv.channels
    if isinstance(drv, SupplyDriver):
        drv.set_voltage(1, 12.5)
        assert drv.read([1], full=True)[1].vset == 12.5
        assert inst.channels[1].vset == 12.5


@pytest.mark.parametrize("kind", KINDS_UNDER_TEST)
def test_over_pty_serial_device(kind, clock, serve, make_driver):
    factory, driver_cls, channels, options = KINDS[kind]
    inst = factory(clock)
    server = serve(inst, pty=True)
    assert server.pty_path and server.pty_path.startswith("/dev/")
    drv = make_driver(driver_cls, server.pty_path, channels, options)
    assert isinstance(drv.link.inner, SerialLink)
    _exercise(drv, inst)


def test_pty_silence_is_a_link_error(clock, serve, make_driver):
    factory, driver_cls, channels, options = KINDS["caen"]
    inst = factory(clock)
    server = serve(inst, pty=True)
    drv = make_driver(driver_cls, server.pty_path, channels, options, timeout=SHORT_TIMEOUT)
    drv.connect()
    inst.silent_until = math.inf
    with pytest.raises(LinkError, match="timeout"):
        drv.read(channels, full=False)


def _need_pyvisa_py() -> None:
    if importlib.util.find_spec("pyvisa_py") is None:
        pytest.skip("pyvisa-py is not installed: VISA TCPIP::...::SOCKET cannot be opened")


def _visa(server) -> str:
    return f"TCPIP::127.0.0.1::{server.port}::SOCKET"


@pytest.mark.parametrize("kind", KINDS_UNDER_TEST)
def test_over_visa_tcpip_socket(kind, clock, serve, make_driver):
    _need_pyvisa_py()
    factory, driver_cls, channels, options = KINDS[kind]
    inst = factory(clock)
    server = serve(inst)
    drv = make_driver(driver_cls, _visa(server), channels, options, visa_library="@py")
    assert isinstance(drv.link.inner, VisaLink)
    assert drv.link.inner.settings.visa_library == "@py"
    _exercise(drv, inst)


def test_visa_silence_is_a_link_error_within_the_timeout(clock, serve, make_driver):
    _need_pyvisa_py()
    factory, driver_cls, channels, options = KINDS["hmp"]
    inst = factory(clock)
    server = serve(inst)
    drv = make_driver(driver_cls, _visa(server), channels, options, timeout=SHORT_TIMEOUT)
    drv.connect()
    inst.silent_until = math.inf
    start = time.monotonic()
    with pytest.raises(LinkError):
        drv.read(channels, full=False)
    assert time.monotonic() - start < SHORT_TIMEOUT + 0.7


def test_visa_to_a_stopped_simulator_is_a_link_error(clock, serve, make_driver):
    _need_pyvisa_py()
    factory, driver_cls, channels, options = KINDS["climate"]
    server = serve(factory(clock))
    address = _visa(server)
    server.stop()
    # pyvisa-py connects lazily: either opening or the first transaction fails, with LinkError
    with pytest.raises(LinkError, match="cannot open|Connection refused"):
        drv = make_driver(driver_cls, address, channels, options, timeout=SHORT_TIMEOUT)
        drv.connect()


class _Writer:
    """PortManager writes its negotiation through `.write()`."""

    def __init__(self, conn) -> None:
        self.write = conn.sendall


class _PtyPort:
    """A pty has no modem lines; PortManager polls them: report them idle, forward the rest."""

    cts = dsr = ri = cd = False

    def __init__(self, port) -> None:
        object.__setattr__(self, "_port", port)

    def __getattr__(self, name):
        return getattr(self._port, name)

    def __setattr__(self, name, value) -> None:
        try:
            setattr(self._port, name, value)
        except (OSError, ValueError):  # e.g. modem-line or break control on a pty
            pass


class Rfc2217Server:
    """A minimal RFC 2217 server (pyserial's PortManager) in front of a serial device path."""

    def __init__(self, device: str) -> None:
        import socket
        import threading

        import serial
        import serial.rfc2217

        self._serial = serial.serial_for_url(device, timeout=0.05)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conn: socket.socket | None = None
        self._rfc2217 = serial.rfc2217
        t = threading.Thread(target=self._serve, daemon=True)
        t.start()
        self._threads.append(t)

    def _serve(self) -> None:
        import threading

        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self._conn = conn
            manager = self._rfc2217.PortManager(_PtyPort(self._serial), _Writer(conn))
            t = threading.Thread(target=self._to_network, args=(conn, manager), daemon=True)
            t.start()
            self._threads.append(t)
            conn.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    data = conn.recv(1024)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self._serial.write(b"".join(manager.filter(data)))

    def _to_network(self, conn, manager) -> None:
        while not self._stop.is_set():
            data = self._serial.read(self._serial.in_waiting or 1)
            if data:
                try:
                    conn.sendall(b"".join(manager.escape(data)))
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        if self._conn:
            self._conn.close()
        self._listener.close()
        self._serial.close()


@pytest.mark.parametrize("kind", ["caen", "hmp"])
def test_over_rfc2217(kind, clock, serve, make_driver):
    """rfc2217://host:port: a remote serial port (e.g. a terminal server) in front of the instrument."""
    factory, driver_cls, channels, options = KINDS[kind]
    inst = factory(clock)
    server = serve(inst, pty=True)
    bridge = Rfc2217Server(server.pty_path)
    try:
        drv = make_driver(driver_cls, f"rfc2217://127.0.0.1:{bridge.port}", channels, options)
        assert isinstance(drv.link.inner, SerialLink)
        _exercise(drv, inst)
        drv.link.close()
    finally:
        bridge.close()
