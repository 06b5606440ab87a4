"""``python -m platform_app.hashpw``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt

APP_DIR = Path(__file__).resolve().parents[1]


def _run(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "platform_app.hashpw"],
        cwd=APP_DIR,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hashpw_prints_cost_12_bcrypt_hash() -> None:
    result = _run("correct horse battery staple\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith("$2b$12$") and len(hashed) == 60
    assert bcrypt.checkpw(b"correct horse battery staple", hashed.encode())
    assert "correct horse" not in result.stdout


def test_hashpw_rejects_empty_and_overlong() -> None:
    assert _run("\n").returncode == 1
    overlong = _run("x" * 73 + "\n")
    assert overlong.returncode == 1
    assert "72 bytes" in overlong.stderr
