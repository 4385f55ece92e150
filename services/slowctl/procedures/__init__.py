"""Procedures: IV scans, burn-in and your own, run by the procedure runner (docs/procedures.md)."""
