"""Bias voltages as people write them: signed like the sensor's bias (-500 V on an n-in-p sensor) or as a
magnitude (the contract's `vset`). A sign against the channel's configured polarity is refused; the
value must be in the channel's range and on the instrument's grid, checked before anything moves."""

from __future__ import annotations

from slowctl.client.api import ClientError
from slowctl.client.client import Client
from slowctl.drivers.base import off_grid
from slowctl.procedures.params import ChannelRef


def sign_of(client: Client, ref: ChannelRef) -> float:
    """-1 on a channel configured negative, else +1 (for the record and the plot)."""
    return -1.0 if client.action(ref.device, ref.channel, "vset").get("polarity") == "-" else 1.0


def bias_problems(client: Client, ref: ChannelRef, name: str, volts: float, *, grid: bool = True) -> list[str]:
    """Why `volts` cannot be set on `ref` (range, polarity, grid); [] when it can."""
    try:
        cap = client.action(ref.device, ref.channel, "vset")
    except ClientError as exc:
        return [f"{name}: {exc}"]
    polarity = cap.get("polarity")
    if volts < 0 and polarity != "-":
        said = "positive polarity" if polarity == "+" else "no polarity configured (values are magnitudes)"
        return [f"{name}: {volts:g} V is negative, but {ref} has {said}"]
    magnitude, lo, hi, step = abs(volts), cap.get("min"), cap.get("max"), cap.get("step")
    if hi is not None and magnitude > hi:
        return [f"{name}: {volts:g} V is beyond {ref}'s limit of {hi:g} V"]
    if lo is not None and magnitude < lo:
        return [f"{name}: {volts:g} V is below {ref}'s minimum of {lo:g} V"]
    if grid and step and off_grid(magnitude, step):
        return [f"{name}: {volts:g} V is finer than {ref}'s {step:g} V step"]
    return []
