"""Files that live beside the checkout in ../shared/ (as in CI), not in the repository.

A test needing one skips with the reason when it is absent, so a plain clone passes its own tests;
under CI=true the same absence is a failure, so CI never passes with those checks silently skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_shared(path: Path, what: str, env: str = "") -> Path:
    """``path`` when it exists; else skip (outside CI) or fail (CI=true), naming what is missing."""
    if Path(path).exists():
        return Path(path)
    hint = f"; set {env} to their folder" if env else ""
    reason = f"{what} not found at {path}{hint}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)
