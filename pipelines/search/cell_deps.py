"""Campaign cells that start from earlier cells (CM3T's staged training: MHVA + PT, then the CAAs).

A variant's ``set`` values may name another variant's cell as ``{cell:VARIANT}``: the output folder of
that variant's cell for the same dataset and seed (e.g. ``model.adapters.0.init_from={cell:mhva_pt}``).
The named variant must come earlier in the campaign file. Such a cell runs after the cell it names has
finished (cells run in waves), and its identity includes that folder, so a rerun earlier stage makes
the later stages new cells too.
"""

from __future__ import annotations

import re

from components.config import ConfigError

PLACEHOLDER = re.compile(r"\{cell:([A-Za-z0-9_.-]+)\}")


def fill_cells(sets: list[str], folders: dict[str, str], where: str) -> tuple[list[str], list[str]]:
    """``sets`` with each ``{cell:VARIANT}`` replaced by ``folders[VARIANT]`` (the cells already expanded
    for this dataset and seed); (the filled sets, the variants named)."""
    named: list[str] = []

    def fill(match: re.Match) -> str:
        variant = match.group(1)
        if variant not in folders:
            raise ConfigError(f"{where}: {{cell:{variant}}} names no earlier variant of this campaign "
                              f"(earlier: {sorted(folders) or 'none'})")
        named.append(variant)
        return folders[variant]

    return [PLACEHOLDER.sub(fill, s) for s in sets], named


def waves(cells: list, finished: set[str]) -> list[list]:
    """``cells`` (each with ``name`` and ``after``, the names of the cells it starts from) in waves: a
    cell runs in the wave after the last of its ``after`` cells that still has to run."""
    depth: dict[str, int] = {}
    for c in cells:  # expanded in file order: every cell's ``after`` come before it
        depth[c.name] = 1 + max((depth[a] for a in c.after if a in depth and a not in finished), default=-1)
    out: list[list] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for c in cells:
        out[depth[c.name]].append(c)
    return out
