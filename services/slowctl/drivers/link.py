"""Instrument links: one request/reply transaction at a time, over pyserial or pyvisa.

Addresses:
  /dev/serial/by-id/...        a serial device (settings from the device config)
  socket://host:port           raw TCP (pyserial URL)
  rfc2217://host:port          remote serial port with settings
  ASRL/dev/ttyUSB0::INSTR, TCPIP::host::port::SOCKET, GPIB0::24::INSTR   VISA resources
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

VISA_RESOURCE = re.compile(r"^(ASRL|TCPIP|GPIB|USB|VXI)\d*::", re.IGNORECASE)


class LinkError(Exception):
    """The instrument link failed (closed, timed out, garbled): the device is disconnected."""


class InstrumentError(Exception):
    """The instrument answered, but refused or did not understand the request."""


@dataclass(frozen=True)
class LinkSettings:
    write_termination: str = "\n"
    read_termination: str = "\n"
    timeout: float = 1.0
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False
    echo: bool = False  # the instrument echoes each request line before replying
    min_interval: float = 0.0  # quiet time the instrument needs between requests (s)
    visa_library: str = "@py"


class PriorityLock:
    """Serialises transactions; a command sequence goes before the next poll transaction.

    The poller takes the lock per transaction; a command takes it for its whole
    sequence, so a command waits at most one round trip of the poller.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition()
        self._waiting = 0
        self._owner: int | None = None  # thread holding exclusive()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._cond:
            while self._waiting and self._owner != threading.get_ident():
                self._cond.wait()
        with self._lock:
            yield

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._cond:
                self._waiting -= 1
                self._cond.notify_all()
        outer, self._owner = self._owner, threading.get_ident()
        try:
            yield
        finally:
            self._owner = outer
            self._lock.release()


class Link(Protocol):
    lock: PriorityLock

    def query(self, request: str) -> str: ...
    def write(self, request: str) -> None: ...
    def close(self) -> None: ...


class _PacedLink:
    """Shared plumbing: locking, echo check and the instrument's minimum interval."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.lock = PriorityLock()
        self._last = 0.0

    def _pace(self) -> None:
        wait = self._last + self.settings.min_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def query(self, request: str) -> str:
        with self.lock.transaction():
            self._pace()
            try:
                self._send(request)
                self._check_echo(request)
                return self._receive()
            finally:
                self._last = time.monotonic()

    def write(self, request: str) -> None:
        with self.lock.transaction():
            self._pace()
            try:
                self._send(request)
                self._check_echo(request)
            finally:
                self._last = time.monotonic()

    def _check_echo(self, request: str) -> None:
        if self.settings.echo:
            echo = self._receive()
            if echo != request:
                raise LinkError(f"expected echo {request!r}, got {echo!r}")

    def _send(self, request: str) -> None:
        raise NotImplementedError

    def _receive(self) -> str:
        raise NotImplementedError


class SerialLink(_PacedLink):
    """pyserial: device paths and socket://, rfc2217://, loop:// URLs."""

    def __init__(self, address: str, settings: LinkSettings) -> None:
        import serial

        super().__init__(settings)
        # pyserial's rfc2217 client has no write timeout
        write_timeout = None if address.startswith("rfc2217://") else settings.timeout
        try:
            self._port = serial.serial_for_url(
                address,
                baudrate=settings.baudrate,
                bytesize=settings.bytesize,
                parity=settings.parity,
                stopbits=settings.stopbits,
                xonxoff=settings.xonxoff,
                rtscts=settings.rtscts,
                timeout=settings.timeout,
                write_timeout=write_timeout,
            )
        except (serial.SerialException, OSError, ValueError, NotImplementedError) as exc:
            raise LinkError(f"cannot open {address}: {exc}") from None
        self._term = settings.read_termination.encode()

    def _send(self, request: str) -> None:
        import serial

        try:
            self._port.reset_input_buffer()  # drop late replies of an earlier timed-out request
            self._port.write((request + self.settings.write_termination).encode("ascii"))
        except (serial.SerialException, OSError, AttributeError, TypeError, ValueError) as exc:
            raise LinkError(f"write failed: {exc!r}") from None

    def _receive(self) -> str:
        import serial

        try:
            raw = self._port.read_until(self._term, 4096)
        except (serial.SerialException, OSError, AttributeError, TypeError, ValueError) as exc:
            raise LinkError(f"read failed: {exc!r}") from None
        if not raw.endswith(self._term):
            raise LinkError("timeout waiting for a reply" if not raw else f"incomplete reply {raw[:64]!r}")
        try:
            return raw[: -len(self._term)].decode("ascii").rstrip("\r")
        except UnicodeDecodeError:
            raise LinkError(f"garbled reply {raw[:64]!r}") from None

    def close(self) -> None:
        try:
            self._port.close()
        except Exception:  # closing a dead port must never raise
            pass


class VisaLink(_PacedLink):
    """pyvisa resources, with pyvisa-py ('@py') or pyvisa-sim ('file.yaml@sim')."""

    def __init__(self, address: str, settings: LinkSettings) -> None:
        import pyvisa
        from pyvisa.resources import MessageBasedResource, SerialInstrument

        super().__init__(settings)
        try:
            self._rm = pyvisa.ResourceManager(settings.visa_library)
            resource = self._rm.open_resource(
                address,
                write_termination=settings.write_termination,
                read_termination=settings.read_termination,
                timeout=int(settings.timeout * 1000),
            )
            if not isinstance(resource, MessageBasedResource):  # e.g. a USB RAW or a register-based resource
                resource.close()
                raise TypeError("not a message-based resource: the link sends text lines")
            self._res = resource
            if address.upper().startswith("ASRL") and isinstance(resource, SerialInstrument):
                resource.baud_rate = settings.baudrate
        except Exception as exc:  # pyvisa raises many types; all mean "cannot open"
            raise LinkError(f"cannot open {address}: {exc}") from None

    def _send(self, request: str) -> None:
        try:
            self._res.write(request)
        except Exception as exc:
            raise LinkError(f"write failed: {exc}") from None

    def _receive(self) -> str:
        try:
            return self._res.read()
        except Exception as exc:
            raise LinkError(f"read failed: {exc}") from None

    def close(self) -> None:
        try:
            self._res.close()
            self._rm.close()
        except Exception:
            pass


def open_link(address: str, settings: LinkSettings) -> Link:
    if VISA_RESOURCE.match(address) or "::" in address:
        return VisaLink(address, settings)
    return SerialLink(address, settings)
