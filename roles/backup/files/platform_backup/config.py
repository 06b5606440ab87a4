"""The job's configuration: /etc/backup/backup.json, rendered by roles/backup."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from platform_backup.util import BackupError

CONFIG = Path(os.environ.get("PLATFORM_BACKUP_CONFIG", "/etc/backup/backup.json"))


@dataclass(frozen=True)
class Repository:
    """A restic repository the job writes to.

    kind "local": a path on this host; the job applies the retention policy to it.
    kind "rest": an append-only REST server (roles/backup_server) reached over TLS with this
    host's own credential; the server applies the retention policy, never the client.
    """

    name: str
    url: str
    kind: str = "local"
    cacert: str | None = None
    credential_file: str | None = None
    user: str | None = None
    prune: bool = True

    def location(self) -> str:
        """The URL restic gets through RESTIC_REPOSITORY (never in process arguments).

        For a REST repository the user and the password from credential_file are put into
        the URL here, so that neither backup.json nor any argument holds the secret."""
        if self.kind != "rest":
            return self.url
        if not self.credential_file or not self.user:
            raise BackupError(f"repository {self.name}: a REST repository needs user and credential_file")
        try:
            secret = Path(self.credential_file).read_text().strip()
        except OSError as exc:
            raise BackupError(f"repository {self.name}: cannot read its credential: {exc}") from exc
        return with_credentials(self.url, self.user, secret)


def with_credentials(url: str, user: str, secret: str) -> str:
    """rest:https://host:port/path/ -> rest:https://user:secret@host:port/path/"""
    prefix, sep, http_url = url.partition(":")
    if prefix != "rest" or not sep:
        raise BackupError(f"not a restic REST URL: {url!r}")
    parts = urlsplit(http_url)
    if parts.scheme != "https":
        raise BackupError(f"REST repositories are reached over TLS only: {url!r}")
    if "@" in parts.netloc:
        raise BackupError(f"credentials must not be written into the URL: {url!r}")
    netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{parts.netloc}"
    return "rest:" + urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Config:
    host: str
    tags: list[str]
    repositories: list[Repository]
    password_file: str
    cache_dir: str
    paths: list[str]
    required_paths: list[str]
    excludes: list[str]
    exclude_caches: bool
    postgresql: dict[str, Any]
    retention: dict[str, Any]
    check_read_data_subset: str
    status_file: str
    check_status_file: str
    drill_dir: str
    manifest_file: str
    alert_after_hours: int = 26
    alert_motd_file: str = "/run/motd.d/90-backup-alert"
    installed_file: str = "/var/lib/backup/installed"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        data = {k: v for k, v in data.items() if not k.startswith("_")}
        repos = [Repository(**r) for r in data.pop("repositories")]
        known = {f for f in cls.__dataclass_fields__ if f not in ("repositories", "extra")}
        return cls(repositories=repos, **{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def repository(self, name: str) -> Repository:
        for repo in self.repositories:
            if repo.name == name:
                return repo
        raise BackupError(f"no repository named {name!r} (have: {[r.name for r in self.repositories]})")


def load(path: Path = CONFIG) -> Config:
    return Config.from_dict(json.loads(path.read_text()))
