"""Where a run directory was written, so a copied or moved one says what it still points at.

`vidpeft train` records its OUTPUT_DIR in run_info.json. A run directory copied or moved elsewhere still
names the original MLflow run (its store and artifact root are absolute) and, in config.yaml, the original
output_dir. Commands that read a run directory follow its new place for its own files (weights, labels,
eval_<split>.json) and say in one line what still points at the original: the MLflow run they log into,
and for `train --config RUN/config.yaml --resume` the output_dir the run would write to.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

INFO = "run_info.json"
PLACE_KEY = "output_dir"


def recorded_place(run_dir: str | Path) -> Path | None:
    """The OUTPUT_DIR the run was written in, when run_info.json records it (runs before this field: None)."""
    info = Path(run_dir) / INFO
    try:
        place = json.loads(info.read_text()).get(PLACE_KEY) if info.is_file() else None
    except (OSError, ValueError):
        return None
    return Path(place) if place else None


def moved_from(run_dir: str | Path) -> Path | None:
    """The original place of a run directory that is now elsewhere (copied or moved), else None."""
    place = recorded_place(run_dir)
    if place is None or place.resolve() == Path(run_dir).resolve():
        return None
    return place


def note_moved_run(run_dir: str | Path, tracking_uri: str | None) -> None:
    """evaluate / export / predict on a copied or moved run directory: one line on what it still points at."""
    original = moved_from(run_dir)
    if original is None:
        return
    from pipelines.runtime.redaction import redact_urls

    store = f"; its MLflow run is still the original's, in {redact_urls(tracking_uri)}" if tracking_uri else ""
    print(f"[vidpeft] note: {run_dir} was copied or moved from {original}: its files are read from "
          f"{run_dir}{store}", file=sys.stderr, flush=True)


def check_resumed_copy(config_files: list[str], output_dir: str | Path) -> None:
    """`train --config COPY/config.yaml`: the saved output_dir is the original's, so the run would write
    there, not into the copy. Said in one line (the user may mean it: a config reused as a template)."""
    for f in config_files:
        path = Path(f)
        if path.name != "config.yaml":
            continue
        original = moved_from(path.parent)
        if original is not None and Path(output_dir).resolve() == original.resolve():
            print(f"[vidpeft] warning: {f} is the saved config of a run copied or moved from {original}; this run "
                  f"writes to {original} (its output_dir): add --set output_dir={path.parent} to continue the "
                  f"copy instead", file=sys.stderr, flush=True)
