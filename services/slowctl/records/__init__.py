"""The record: commands and events in MongoDB (docs/records.md)."""
