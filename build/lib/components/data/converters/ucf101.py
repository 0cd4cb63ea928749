"""UCF101 split lists -> manifest rows.

ucfTrainTestlist/: classInd.txt ("1 ApplyEyeMakeup", 1-based), trainlist0K.txt
("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"), testlist0K.txt (no label), K = fold 1-3.
Pass the folder or the files. The class comes from the folder part of each entry, matched to
classInd without case (the release spells one class HandstandPushups in classInd and
HandStandPushups in file names); a trailing label must agree. Videos: <Class>/<file>.avi or flat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.config import cfg
from components.data.converters.base import (AnnotationFile, Converted, ConverterError, PendingRow,
                                             VideoFinder, parse_int, read_lines)
from components.data.converters.registry import register_format


@dataclass
class SplitListOptions:
    fold: int = cfg(1, "which of the three official train/test splits (1-3)")
    test_split: str = cfg("test", "manifest split for the official test list (val = evaluate it every epoch)")

    def __post_init__(self) -> None:
        if self.fold not in (1, 2, 3):
            raise ValueError(f"fold must be 1, 2 or 3, got {self.fold}")
        if self.test_split not in ("val", "test"):
            raise ValueError(f"test_split must be val or test, got {self.test_split!r}")


def expand(files: list[AnnotationFile]) -> list[Path]:
    """Annotation folders become their files."""
    paths = []
    for af in files:
        paths.extend(sorted(p for p in af.path.iterdir() if p.is_file()) if af.path.is_dir() else [af.path])
    return paths


def parse(files: list[AnnotationFile], opts: SplitListOptions, finder: VideoFinder) -> Converted:
    paths = expand(files)
    by_name = {p.name.lower(): p for p in paths}
    needed = ["classind.txt", f"trainlist0{opts.fold}.txt", f"testlist0{opts.fold}.txt"]
    lacking = [n for n in needed if n not in by_name]
    if lacking:
        raise ConverterError(files[0].path, f"missing {lacking} among the annotations (fold {opts.fold})")
    class_file = by_name["classind.txt"]
    classes: dict[int, str] = {}
    for line, text in read_lines(class_file):
        parts = text.split()
        if len(parts) != 2:
            raise ConverterError(class_file, f"expected 'INDEX NAME', got {text!r}", f"line {line}")
        classes[parse_int(parts[0], class_file, f"line {line}", "index") - 1] = parts[1]
    if sorted(classes) != list(range(len(classes))):
        raise ConverterError(class_file, "class indices are not 1..N")
    class_names = [classes[i] for i in range(len(classes))]
    lookup = {c.lower(): i for i, c in enumerate(class_names)}

    out = []
    for name, split in ((needed[1], "train"), (needed[2], opts.test_split)):
        path = by_name[name]
        for line, text in read_lines(path):
            where = f"line {line}"
            parts = text.split()
            rel = parts[0].replace("\\", "/")
            cid = Path(rel).stem
            folder = rel.split("/")[0] if "/" in rel else ""
            if folder.lower() not in lookup:
                raise ConverterError(path, f"class folder {folder!r} is not in classInd.txt", where, cid)
            label = lookup[folder.lower()]
            if len(parts) > 1 and parse_int(parts[1], path, where, "label") - 1 != label:
                raise ConverterError(path, f"label {parts[1]} disagrees with folder {folder!r}", where, cid)
            out.append(PendingRow(cid, split, str(path), where, [rel, Path(rel).name],
                                  [Path(rel).name], {"label": label}))
    return Converted(out, class_names, "ucf101")


register_format("ucf101", SplitListOptions, parse,
                "UCF101 ucfTrainTestlist (classInd.txt, trainlist0K.txt, testlist0K.txt)")
