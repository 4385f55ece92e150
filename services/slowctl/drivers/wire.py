"""Small wire-format helpers shared by the ASCII drivers (SCPI and alike)."""

from __future__ import annotations

from decimal import Decimal

from slowctl.drivers.link import Link, LinkError


def flag(text: str) -> bool:
    """A boolean reply: 1/0 or ON/OFF; anything else is a garbled line."""
    value = text.strip().upper()
    if value in ("1", "ON"):
        return True
    if value in ("0", "OFF"):
        return False
    raise LinkError(f"expected 0/1, got {text[:32]!r}")


def decimal(value: float) -> str:
    """Plain decimal (SCPI NR2), never rounded to a coarser value: 4e-05 -> '0.00004', 32.05 -> '32.05',
    5e-11 -> '0.00000000005'. 15 significant digits: all a float holds, without its binary noise."""
    return format(Decimal(f"{value:.15g}"), "f")


def decimals(step: float) -> int:
    """Decimal places of a step: 0.1 -> 1, 0.05 -> 2, 1 -> 0, 5e-11 -> 11."""
    places = 0
    while abs(step * 10**places - round(step * 10**places)) > 1e-6 * step * 10**places and places < 15:
        places += 1
    return places


def fixed(value: float, step: float) -> str:
    """A value on a step's grid with the step's decimal places (12.3 on 0.1 -> '12.3', 20 on 1 -> '20'):
    exact for every value the step check lets through, as the manuals' fixed formats (%.1f, %03d) are."""
    return f"{value:.{decimals(step)}f}"


def ask(link: Link, queries: list[str], joined: bool = True, prefix: str | None = None) -> list[str]:
    """Answers to several queries: one `;`-joined message and reply, or one round trip each.

    `prefix` (e.g. a channel selection, no answer of its own) leads the joined message.
    """
    if not joined:
        if prefix:
            raise ValueError("a prefix needs joined queries: it must travel in the same message")
        return [link.query(q) for q in queries]
    reply = link.query(";".join([prefix, *queries] if prefix else queries))
    parts = reply.split(";")
    if len(parts) != len(queries):
        raise LinkError(f"expected {len(queries)} answers to {queries[0]!r}..., got {reply[:64]!r}")
    return parts
