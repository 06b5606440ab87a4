"""User database: a JSON file of usernames, bcrypt hashes and roles."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

ROLES = frozenset({"user", "admin"})
USERNAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BCRYPT_RE = re.compile(r"^\$2[aby]\$(\d{2})\$[./A-Za-z0-9]{53}$")
BCRYPT_MAX_BYTES = 72
DEFAULT_COST = 12
# The lowest bcrypt cost the app accepts in its users file (the page promises 12). A file
# with a cheaper hash is refused at startup (exit 78), whatever deployed it.
MIN_COST = 12


class UsersFileError(Exception):
    """The users file is missing or malformed."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    password_hash: bytes = field(repr=False)


def _parse_user(name: object, entry: object, min_cost: int) -> User:
    if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
        raise UsersFileError(f"invalid username {name!r}")
    if not isinstance(entry, dict):
        raise UsersFileError(f"user {name}: entry must be an object")
    password_hash = entry.get("password_hash")
    role = entry.get("role", "user")
    if not isinstance(password_hash, str) or not _BCRYPT_RE.fullmatch(password_hash):
        raise UsersFileError(f"user {name}: password_hash is not a bcrypt hash")
    cost = int(password_hash[4:6])
    if cost < min_cost:
        raise UsersFileError(
            f"user {name}: bcrypt cost {cost} is below {min_cost}; rehash the password"
            " (python -m platform_app.hashpw)"
        )
    if role not in ROLES:
        raise UsersFileError(f"user {name}: role must be one of {sorted(ROLES)}")
    return User(username=name, role=role, password_hash=password_hash.encode("ascii"))


def _cost(user: User) -> int:
    match = _BCRYPT_RE.fullmatch(user.password_hash.decode("ascii"))
    return int(match.group(1)) if match else DEFAULT_COST


class UserStore:
    """Looks users up and checks passwords in roughly constant time."""

    def __init__(self, users: dict[str, User]) -> None:
        self._users = dict(users)
        # Unknown users are checked against a dummy hash of the same cost as real ones,
        # so that response time does not reveal whether a username exists.
        cost = max((_cost(u) for u in self._users.values()), default=DEFAULT_COST)
        self._dummy_hash = bcrypt.hashpw(b"dummy-password", bcrypt.gensalt(rounds=cost))

    @classmethod
    def from_file(cls, path: Path, min_cost: int = MIN_COST) -> UserStore:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsersFileError(f"cannot read users file {path}: {exc.strerror}") from None
        except ValueError:
            raise UsersFileError(f"users file {path} is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
            raise UsersFileError('users file must look like {"users": {...}}')
        users = data["users"].items()
        return cls({name: _parse_user(name, entry, min_cost) for name, entry in users})

    def get(self, username: str) -> User | None:
        return self._users.get(username)

    def exists(self, username: str) -> bool:
        return username in self._users

    def authenticate(self, username: str, password: str) -> User | None:
        """Return the user when the password matches; always runs bcrypt once."""
        user = self._users.get(username)
        candidate = password.encode("utf-8")
        too_long = len(candidate) > BCRYPT_MAX_BYTES
        candidate = candidate[:BCRYPT_MAX_BYTES]
        stored = user.password_hash if user is not None else self._dummy_hash
        matched = bcrypt.checkpw(candidate, stored)
        if user is None or too_long or not matched:
            return None
        return user
