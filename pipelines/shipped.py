"""The YAML files that ship with vidpeft, found by name as well as by path.

Three kinds, each in its own folder (package data, so a wheel installed anywhere has them):
- configs: experiment YAMLs under pipelines/configs/ -- ``demo``, ``demo/target``, and the presets
  under presets/, which may drop that prefix: ``cm3t/mhva_pt`` = presets/cm3t/mhva_pt.yaml;
  the presets alone are the kind ``preset`` (`vidpeft explain --preset`, pipelines/presets.py);
- spaces: search spaces, tune_spaces/*.yaml -- ``demo_adapters``;
- campaigns: campaign grids, tune_spaces/campaigns/*.yaml -- ``cm3t_table5``.

A reference that is an existing file is that file. Otherwise it is a name looked up in the kind's
folder (``.yaml`` optional). A path written for the checkout (``pipelines/configs/...``,
``tune_spaces/...``, or ``../../pipelines/configs/...`` inside a campaign) that does not exist where it
is read resolves to the same file in the installed package, so the README's commands and the
campaigns work from any directory.
"""

from __future__ import annotations

from pathlib import Path

from components.config import ConfigError

CONFIGS = Path(__file__).resolve().parent / "configs"
# tune_spaces/ is a top-level folder of the checkout; pipelines/tune_spaces links to it, so the wheel
# carries it as the pipelines package's data and a checkout finds it at the same place
SPACES = Path(__file__).resolve().parent / "tune_spaces"

_ROOTS = {  # kind -> (folders searched in order, the checkout prefix a path may carry)
    "config": ((CONFIGS, CONFIGS / "presets"), "pipelines/configs/"),
    "preset": ((CONFIGS / "presets",), "pipelines/configs/presets/"),
    "space": ((SPACES,), "tune_spaces/"),
    "campaign": ((SPACES / "campaigns", SPACES), "tune_spaces/campaigns/"),
}


def find(kind: str, ref: str | Path, base: Path | None = None) -> Path:
    """The file ``ref`` names (a path, relative to ``base`` when given, or a shipped name)."""
    folders, prefix = _ROOTS[kind]
    path = Path(ref)
    if not path.is_absolute() and base is not None:
        path = base / path
    if path.is_file():
        return path
    text = str(ref).replace("\\", "/")
    candidates = [text]
    for marker in (prefix, "tune_spaces/"):  # a checkout path: its tail inside the package folder
        if marker in text:
            candidates.append(text.split(marker, 1)[1])
    for name in candidates:
        for folder in folders:
            for c in (folder / name, folder / f"{name}.yaml"):
                if c.is_file():
                    return c
    raise ConfigError(f"{ref}: no such file, and no shipped {kind} of that name "
                      f"(`vidpeft list {kind}s` shows them)")


def names(kind: str) -> list[str]:
    """Every shipped file of ``kind`` by the name ``find`` takes."""
    folders, _ = _ROOTS[kind]
    top = folders[0]
    out = []
    for f in sorted(top.rglob("*.yaml")):
        if kind == "space" and f.parent.name == "campaigns":
            continue
        rel = f.relative_to(top).with_suffix("").as_posix()
        out.append(rel.removeprefix("presets/") if kind == "config" else rel)
    return out
