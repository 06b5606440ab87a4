"""Issuing and verifying HS256 access tokens."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "role", "iat", "exp", "jti")


class InvalidToken(Exception):
    """The token is malformed, expired, forged or lacks required claims."""


@dataclass(frozen=True)
class Claims:
    sub: str
    role: str
    jti: str
    exp: int


class TokenService:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def issue(self, username: str, role: str, now: int | None = None) -> str:
        issued_at = int(time.time()) if now is None else now
        payload = {
            "sub": username,
            "role": role,
            "iat": issued_at,
            "exp": issued_at + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        sub, role, jti, exp = (payload.get(k) for k in ("sub", "role", "jti", "exp"))
        if not (isinstance(sub, str) and isinstance(role, str) and isinstance(jti, str)):
            raise InvalidToken("bad claim types")
        if not isinstance(exp, int):
            raise InvalidToken("bad exp")
        return Claims(sub=sub, role=role, jti=jti, exp=exp)
