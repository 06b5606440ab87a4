"""Make the Python that roles ship to hosts importable by the unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "roles/backup/files", ROOT / "roles/backup_server/files", ROOT / "tests/host", ROOT / "tests/unit"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
