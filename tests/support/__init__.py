"""Shared helpers for tests: locating real local parts (anvil, litecoind, postgres) and free ports."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str, *candidates: Path) -> str:
    """Return the path of a binary a test needs.

    Locally a missing binary skips the test with the command that installs it; under CI
    (``CI=true``) it fails, so a green CI run always means the real part was exercised.
    """
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    msg = f"{name} is not installed (run `bash .ci/run` or see README: 'Test prerequisites')"
    if in_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
