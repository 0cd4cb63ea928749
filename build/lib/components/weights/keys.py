"""Key renaming shared by the published-layout converters."""

from __future__ import annotations


def rename_start(name: str, table: dict[str, str]) -> str:
    """``name`` with its first matching leading part replaced per ``table`` (old -> new)."""
    for old, new in table.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name
