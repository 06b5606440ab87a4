"""``python -m platform_app.hashpw``: read a password on stdin, print its bcrypt hash."""

from __future__ import annotations

import getpass
import sys

import bcrypt

from platform_app.users import BCRYPT_MAX_BYTES, DEFAULT_COST


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    encoded = password.encode("utf-8")
    if not encoded:
        raise ValueError("empty password")
    if len(encoded) > BCRYPT_MAX_BYTES:
        raise ValueError(f"password longer than {BCRYPT_MAX_BYTES} bytes (bcrypt limit)")
    return bcrypt.hashpw(encoded, bcrypt.gensalt(rounds=cost)).decode("ascii")


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def main() -> int:
    try:
        print(hash_password(_read_password()))
    except ValueError as exc:
        print(f"hashpw: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
