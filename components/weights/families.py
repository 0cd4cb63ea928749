"""What every family's loader does first: read a published file, check its layout is one the family
reads, and collect the notes on what the reader did.

The loaders themselves live beside their families (``components/backbones/<family>.py``): each
converts the file to its own layout (its record's ``convert``), resizes what its architecture allows
and loads strictly (``strict.load_strict``), returning a ``LoadReport`` and printing one line per
thing done to the file's tensors; anything that does not fit raises ``WeightsError``.
"""

from __future__ import annotations

from pathlib import Path

from components.weights.identify import check_family_layout
from components.weights.reader import WeightsFile, read_weights_file


def read_for_family(path: str | Path, key_hint: str, family: str) -> tuple[WeightsFile, str, list[str]]:
    """The file, where it is named in errors, and the notes on what the reader did; a file of
    another family's layout is one error naming the family it fits."""
    wf = read_weights_file(path, key_hint=key_hint)
    check_family_layout(family, wf.tensors, f"{key_hint}: {path}")
    notes = []
    if wf.format == "torchscript":
        notes.append("TorchScript archive: tensors read, its code not run")
    if wf.wrapper:
        notes.append(f"{wf.format} file; unwrapped {', '.join(wf.wrapper)}")
    if wf.dropped:
        notes.append(f"dropped the classifier head ({', '.join(wf.dropped[:3])})")
    return wf, f"{key_hint}: {path}", notes
