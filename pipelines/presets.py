"""Presets and where their values come from: `vidpeft explain --preset NAME`.

A preset (pipelines/configs/presets/<method>/<name>.yaml) is a whole recipe: its model section, and
through ``extends`` the method's shared optimiser/data/test-view recipe (pipelines/configs/recipes/).
Every file's ``sources`` maps dotted keys to where the value comes from: "paper Sec. ...", "official
code ...", or "vidpeft choice: why". A source covers the keys under it (``model.adapters.0`` covers
``model.adapters.0.scale``), the longest one wins. ``recipe_rows`` lists every value a preset sets
with its source; a value without one is reported (tests/pipelines/configs/test_preset_sources.py
checks every shipped preset has none).
"""

from __future__ import annotations

from pathlib import Path

from components.config import SOURCES_KEY, ConfigError, deep_merge, file_layers
from pipelines.shipped import CONFIGS, find, names

PRESETS = CONFIGS / "presets"
MISSING = "(no source given)"


def find_preset(name: str) -> Path:
    """A preset by name (``cm3t/mhva_pt``, with or without .yaml, under pipelines/configs/presets) or a path:
    the shipped files' one resolver (pipelines/shipped.py), kind ``preset``."""
    try:
        return find("preset", name)
    except ConfigError:
        pass
    try:  # a shipped config that is no preset (demo/target): it has no sources to show
        find("config", name)
        what = "is a shipped config, not a preset: it names no source per value (`vidpeft explain` lists every key)"
    except ConfigError:
        what = "no such preset file"
    raise ConfigError(f"--preset {name}: {what} (presets: {', '.join(names('preset'))})") from None


def leaves(data, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) for every scalar of nested dicts/lists (list items by index, as --set writes them);
    an empty list or dict is a value of its own."""
    if isinstance(data, dict) and data:
        return [row for k, v in data.items() for row in leaves(v, f"{prefix}{k}.")]
    if isinstance(data, list) and data and any(isinstance(v, (dict, list)) for v in data):
        return [row for i, v in enumerate(data) for row in leaves(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), data)]


def source_of(key: str, sources: dict[str, str]) -> str:
    """The source of ``key``: its own entry, else that of the nearest section above it."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:n]))
        if found is not None:
            return found
    return MISSING


def recipe(path: str | Path) -> tuple[dict, dict[str, str]]:
    """A preset's merged values (its ``extends`` chain, then itself) and merged sources."""
    values: dict = {}
    sources: dict[str, str] = {}
    for _, data in file_layers(path):
        sources.update(data.get(SOURCES_KEY, {}))
        values = deep_merge(values, {k: v for k, v in data.items() if k != SOURCES_KEY})
    return values, sources


def recipe_rows(path: str | Path) -> list[tuple[str, object, str]]:
    """(dotted key, value, source) for every value the preset sets; sources naming no key are listed too,
    as (key, None, 'source for a key the preset does not set: ...')."""
    values, sources = recipe(path)
    rows = [(key, value, source_of(key, sources)) for key, value in leaves(values)]
    keys = [k for k, _ in leaves(values)]
    stale = [k for k in sources if not any(x == k or x.startswith(k + ".") for x in keys)]
    return rows + [(k, None, f"source for a key the preset does not set: {sources[k]}") for k in stale]


def unsourced(path: str | Path) -> list[str]:
    """Keys the preset sets without a source, and sources for keys it does not set."""
    return [k for k, v, s in recipe_rows(path) if s == MISSING or s.startswith("source for a key")]


def print_recipe(name: str) -> int:
    path = find_preset(name)
    rows = recipe_rows(path)
    width = max(len(k) for k, _, _ in rows)
    print(f"{path} (with what it extends): each value and where it comes from")
    for key, value, source in rows:
        shown = "-" if value is None else str(value)
        print(f"{key:<{width}}  {shown:<14} {source}")
    bad = unsourced(path)
    if bad:
        print(f"[vidpeft] {len(bad)} key(s) without a source: {', '.join(bad)}")
        return 1
    return 0
