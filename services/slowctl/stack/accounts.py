"""People's accounts: `slowctl user add|list|passwd|remove`.

One directory holds them (natively `<state_dir>/accounts/`, in compose `./secrets/accounts/`):
  users.json    the accounts: {"users": {"alice": {"role": "operator", "hash": "$7$...", ...}}} (0600)
  users.passwd  the broker's password lines for them (Mosquitto's `$7$` hashes)      (0600)
  users.acl     the broker's ACL block of each: viewers read, operators also publish commands under
                <root>/<target>/by/<their login>/cmd, nothing else                     (0644)
The broker appends the last two to its own files; Node-RED checks dashboard logins against users.json.
All three are replaced atomically, users.json last, so a reader never sees half a change.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slowctl.atomic import write_text
from slowctl.config import RESERVED_IDS
from slowctl.device.contract import LOGIN
from slowctl.stack.broker import ROLES, hash_password

PEOPLE_ROLES = ("viewer", "operator")
SHORTEST = 12  # characters of a password
LONGEST = 256
RESERVED = (*RESERVED_IDS, *ROLES, "unknown", "admin", "root")  # the stack's own logins and pages


class AccountError(Exception):
    pass


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    hash: str
    created: str
    changed: str


def check_password(password: str) -> None:
    if not password or not password.strip():
        raise AccountError("the password is empty")
    if len(password) < SHORTEST:
        raise AccountError(f"the password is too short: {len(password)} characters, at least {SHORTEST}")
    if len(password) > LONGEST:
        raise AccountError(f"the password is too long: at most {LONGEST} characters")
    if any(c in password for c in "\n\r\0"):
        raise AccountError("the password must not contain line breaks or NUL")


def check_role(role: str) -> None:
    if role not in PEOPLE_ROLES:
        raise AccountError(f"unknown role {role!r}: expected one of {', '.join(PEOPLE_ROLES)}")


class Accounts:
    def __init__(self, directory: Path, devices: list[str], root: str = "slowctl", containers: bool = False) -> None:
        """`containers`: the compose stack's, read by Node-RED's container user (uid 1000, not ours): users.json
        is then 0644 inside a `secrets/` that only we may enter (0700)."""
        self.dir = directory
        self.containers = containers
        self.devices = devices  # device services are broker users named like their device
        self.root = root
        self.file = directory / "users.json"
        self.users: dict[str, Account] = self._load()

    # --- changes (each saves; nothing is written when it refuses) -----------------------------
    def add(self, name: str, role: str, password: str) -> Account:
        self._check_name(name)
        if name in self.users:
            raise AccountError(f"user {name!r} exists already (change the password with: slowctl user passwd {name})")
        check_role(role)
        check_password(password)
        now = _now()
        self.users[name] = Account(name, role, hash_password(password), now, now)
        self.save()
        return self.users[name]

    def passwd(self, name: str, password: str) -> None:
        old = self._get(name)
        check_password(password)
        self.users[name] = Account(name, old.role, hash_password(password), old.created, _now())
        self.save()

    def set_role(self, name: str, role: str) -> None:
        old = self._get(name)
        check_role(role)
        self.users[name] = Account(name, role, old.hash, old.created, _now())
        self.save()

    def remove(self, name: str) -> None:
        self._get(name)
        del self.users[name]
        self.save()

    def _get(self, name: str) -> Account:
        if name not in self.users:
            known = ", ".join(sorted(self.users)) or "none yet"
            raise AccountError(f"unknown user {name!r} (known: {known})")
        return self.users[name]

    def _check_name(self, name: str) -> None:
        if not LOGIN.match(name):
            raise AccountError(
                f"user name {name[:40]!r}: 2 to 32 characters, lower-case letters, digits and _.- , "
                "starting with a letter"
            )
        if name in RESERVED or name in self.devices:
            raise AccountError(f"user name {name!r} is taken by a service of the stack; choose another")

    # --- files ---------------------------------------------------------------------------------
    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        people = sorted(self.users.values(), key=lambda a: a.name)
        write_text(self.dir / "users.passwd", "".join(f"{a.name}:{a.hash}\n" for a in people), 0o600)
        write_text(self.dir / "users.acl", self.acl(people), 0o644)
        body = {
            "users": {
                a.name: {"role": a.role, "hash": a.hash, "created": a.created, "changed": a.changed} for a in people
            }
        }
        if self.containers:
            self.dir.parent.chmod(0o700)
        write_text(self.file, json.dumps(body, indent=1) + "\n", 0o644 if self.containers else 0o600)

    def acl(self, people: list[Account]) -> str:
        r = self.root
        lines = ["# generated by `slowctl user`: do not edit (docs/records.md)\n"]
        for a in people:
            lines.append(f"\nuser {a.name}\ntopic read {r}/#\ntopic read /+/status\n")
            if a.role == "operator":
                lines.append(f"topic write {r}/+/by/{a.name}/cmd\ntopic write {r}/+/by/{a.name}/cmd/#\n")
            else:  # a viewer asks the recorder about the record (read-only questions), nothing else
                lines.append(f"topic write {r}/recorder/by/{a.name}/cmd\n")
        return "".join(lines)

    def _load(self) -> dict[str, Account]:
        if not self.file.exists():
            return {}
        try:
            body = json.loads(self.file.read_text())
            users = body["users"]
            if not isinstance(users, dict):
                raise TypeError("'users' is not a mapping")
            return {name: _account(name, entry) for name, entry in users.items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise AccountError(f"{self.file}: cannot be read ({exc}); fix or remove it") from None


def _account(name: str, entry: Any) -> Account:
    if not isinstance(entry, dict) or not LOGIN.match(name):
        raise TypeError(f"user {name!r}: expected a login name with {{role, hash}}")
    role, hash_ = entry.get("role"), entry.get("hash")
    if role not in PEOPLE_ROLES or not isinstance(hash_, str) or not hash_.startswith("$7$"):
        raise TypeError(f"user {name!r}: role must be one of {', '.join(PEOPLE_ROLES)} and hash a '$7$' hash")
    return Account(name, role, hash_, str(entry.get("created", "")), str(entry.get("changed", "")))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
