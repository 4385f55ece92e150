"""Error checks of SCPI-like instruments: a setting has no reply of its own, so it is followed by a query
that says whether the instrument took it. One helper for every driver; they differ only in the query.

    ERRORS = ErrorQueue(":SYST:ERR?", clear="*CLS")
    ERRORS.command(link, ":SOUR:VOLT 150")   # raises InstrumentError("instrument refused ...: -222,...")
"""

from __future__ import annotations

from collections.abc import Mapping

from slowctl.drivers.link import InstrumentError, Link, LinkError

MAX_ERRORS = 20  # queue entries read at most: a full queue must not keep a command busy forever


def error_code(reply: str) -> int:
    """The number of an error reply, `-222,"Data out of range"` -> -222; 0 means no error."""
    try:
        return int(reply.partition(",")[0])
    except ValueError:
        raise LinkError(f"unreadable error reply {reply[:64]!r}") from None


def number(reply: str, query: str) -> int:
    """An integer register reply (`*ESR?` -> `32`); anything else is a garbled line."""
    try:
        return int(reply.strip())
    except ValueError:
        raise LinkError(f"unreadable {query} reply {reply[:32]!r}") from None


class ErrorCheck:
    """Send settings, then ask the instrument what went wrong; a driver holds one of these.

    `clear` (e.g. `*CLS`) leads the settings' message, so that no stale error is blamed on them;
    None where clearing would also lose something else (the latched trips of an iseg).
    """

    def __init__(self, clear: str | None = None) -> None:
        self.clear = clear

    def errors(self, link: Link) -> list[str]:
        """What the instrument reports since the last check (and forgets it): empty when all is well."""
        raise NotImplementedError

    def write(self, link: Link, *commands: str, joined: bool = True) -> None:
        """Write settings unchecked: one `;`-joined line, or a line each."""
        parts = [self.clear, *commands] if self.clear else list(commands)
        for line in [";".join(parts)] if joined else parts:
            link.write(line)

    def command(self, link: Link, *commands: str, joined: bool = True) -> None:
        """Write settings and raise InstrumentError with the reason when the instrument refused one.

        The check travels in a line of its own: a header error discards the rest of its line, and a lost
        error query would look like a dead link."""
        self.write(link, *commands, joined=joined)
        errors = self.errors(link)
        if errors:
            raise InstrumentError(f"instrument refused {';'.join(commands)!r}: " + "; ".join(errors))


class ErrorQueue(ErrorCheck):
    """The SCPI error queue: `SYST:ERR?` read until `0,"No error"`."""

    def __init__(self, query: str = ":SYST:ERR?", clear: str | None = None) -> None:
        super().__init__(clear)
        self.query = query

    def checked_query(self, link: Link, request: str) -> tuple[str, list[str]]:
        """A query with the error query in its line (one round trip): its reply, and what went wrong (the
        rest of the queue read too, so nothing stale is left); empty when all is well."""
        reply, _, error = link.query(f"{request};{self.query}").rpartition(";")
        return (reply, []) if error_code(error) == 0 else (reply, [error, *self.errors(link)])

    def errors(self, link: Link) -> list[str]:
        found = []
        for _ in range(MAX_ERRORS):
            reply = link.query(self.query)
            if error_code(reply) == 0:
                break
            found.append(reply)
        return found


class EventRegisters(ErrorCheck):
    """IEEE 488.2 standard event status register (`*ESR?`, cleared by reading), with the number of an
    execution error from a device register (Aim-TTi `EER?`); or that register alone (`esr=False`)."""

    ESR_BITS = (
        (0x20, "command error (not understood)"),
        (0x10, "execution error"),
        (0x08, "verify timeout"),
        (0x04, "query error"),
    )
    EXECUTION = 0x10

    def __init__(self, texts: Mapping[int, str], esr: bool = True, register: str = "EER?") -> None:
        super().__init__(None)  # *CLS would also clear the registers that latch trips
        self.texts, self.esr, self.register = texts, esr, register

    def _execution_error(self, link: Link, prefix: str) -> str | None:
        code = number(link.query(self.register), self.register)
        return f"{prefix}{code} ({self.texts.get(code, 'unknown')})" if code else None

    def errors(self, link: Link) -> list[str]:
        if not self.esr:
            error = self._execution_error(link, "error ")
            return [error] if error else []
        esr = number(link.query("*ESR?"), "*ESR?")
        found = []
        for bit, text in self.ESR_BITS:
            if esr & bit:
                detail = self._execution_error(link, "execution error ") if bit == self.EXECUTION else None
                found.append(detail or text)
        return found

    def flush(self, link: Link) -> None:
        """Read and so clear both registers: errors of an earlier session are not this one's."""
        number(link.query("*ESR?"), "*ESR?")
        number(link.query(self.register), self.register)
