"""Per-user portfolio files under ``<state>/users/<owner>/<name>.json``.

With ``PLATFORM_DATABASE_URL`` set, portfolios are rows in PostgreSQL instead
(:class:`platform_app.portfolios_pg.PgPortfolioStore`): same names, caps and errors, and
the same stored bytes (:func:`serialize`), so a cap means the same on both stores.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from platform_app.users import USERNAME_RE

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DIR_MODE = 0o700
FILE_MODE = 0o600
SUFFIX = ".json"
DEFAULT_MAX_COUNT = 100
DEFAULT_MAX_BYTES = 256 * 1024


class InvalidName(ValueError):
    """Owner or portfolio name is not acceptable."""


class PortfolioNotFound(LookupError):
    """No such portfolio."""


class PortfolioTooLarge(ValueError):
    """The stored document would exceed the size cap."""


class PortfolioLimitReached(RuntimeError):
    """The user already has as many portfolios as allowed."""


class Portfolios(Protocol):
    """What the API needs of a portfolio store (:class:`PortfolioStore`, or
    :class:`platform_app.portfolios_pg.PgPortfolioStore`)."""

    max_count: int
    max_bytes: int

    def read(self, owner: str, name: str) -> Any: ...
    def write(self, owner: str, name: str, document: Any) -> int: ...
    def delete(self, owner: str, name: str) -> None: ...
    def list(self, owner: str) -> list[str]: ...
    def close(self) -> None: ...


def serialize(document: Any) -> bytes:
    """What a store keeps of a portfolio: compact JSON in UTF-8 and a newline."""
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return data + b"\n"


def too_large(max_bytes: int) -> PortfolioTooLarge:
    return PortfolioTooLarge(f"a portfolio may take at most {max_bytes} bytes")


def limit_reached(max_count: int) -> PortfolioLimitReached:
    return PortfolioLimitReached(f"at most {max_count} portfolios per user; delete one first")


def check_owner(owner: str) -> None:
    if not USERNAME_RE.fullmatch(owner):
        raise InvalidName("invalid owner")


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise InvalidName("invalid portfolio name")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive flock on the user's directory: one writer at a time across workers,
    so that two new portfolios cannot both take the last free place."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ensure_private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise InvalidName(f"{path.name} is not a plain directory")
    os.chmod(path, DIR_MODE)


class PortfolioStore:
    """At most ``max_count`` portfolios per user, each at most ``max_bytes`` on disk (so
    one user can never hold more than max_count * max_bytes)."""

    def __init__(
        self,
        state_dir: Path,
        max_count: int = DEFAULT_MAX_COUNT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.users_root = state_dir / "users"
        self.max_count = max_count
        self.max_bytes = max_bytes

    def _user_dir(self, owner: str, *, create: bool) -> Path:
        check_owner(owner)
        directory = self.users_root / owner
        if create:
            _ensure_private_dir(self.users_root)
            _ensure_private_dir(directory)
        return directory

    def _path(self, owner: str, name: str, *, create: bool) -> Path:
        check_name(name)
        directory = self._user_dir(owner, create=create)
        candidate = directory / f"{name}{SUFFIX}"
        # Defence in depth: the resolved path must stay directly inside the user's directory.
        root = self.users_root.resolve()
        resolved_dir = directory.resolve()
        resolved = candidate.resolve()
        if resolved_dir.parent != root or resolved.parent != resolved_dir:
            raise InvalidName("path escapes the user directory")
        return resolved

    def read(self, owner: str, name: str) -> Any:
        path = self._path(owner, name, create=False)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise PortfolioNotFound(name) from None
        with os.fdopen(fd, "rb") as handle:
            return json.loads(handle.read())

    def write(self, owner: str, name: str, document: Any) -> int:
        """Atomically replace the portfolio; returns the number of bytes stored."""
        data = serialize(document)
        if len(data) > self.max_bytes:
            raise too_large(self.max_bytes)
        path = self._path(owner, name, create=True)
        with _locked(path.parent):
            if not path.exists() and len(self.list(owner)) >= self.max_count:
                raise limit_reached(self.max_count)
            self._replace(path, data)
        return len(data)

    def delete(self, owner: str, name: str) -> None:
        path = self._path(owner, name, create=False)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            raise PortfolioNotFound(name) from None

    def _replace(self, path: Path, data: bytes) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, FILE_MODE)
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def list(self, owner: str) -> list[str]:
        directory = self._user_dir(owner, create=False)
        if not directory.is_dir():
            return []
        names = (p.name.removesuffix(SUFFIX) for p in directory.iterdir() if p.suffix == SUFFIX)
        return sorted(n for n in names if NAME_RE.fullmatch(n))

    def close(self) -> None:
        """Nothing to close: every call opens and closes its own files."""
