"""Any CSV with one row per clip -> manifest rows, through a column mapping.

Every option names a column of the CSV; empty = not present. Labels are class names (mapped
to indices by a class list or by sorted name) or integer indices; multi-label cells hold
several names/indices joined by `multi_label_sep`; times are seconds, frames or "HH:MM:SS.ff".
Without a clip id column the id is the video's file stem (+ the time range when there is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from components.config import cfg
from components.data.converters.base import (AnnotationFile, Converted, ConverterError, PendingRow,
                                             VideoFinder, normalise_split, parse_float, parse_int,
                                             parse_timestamp, read_class_list, read_csv)
from components.data.converters.registry import register_format


@dataclass
class GenericCsvOptions:
    video_column: str = cfg("video_path", "column with the video path, relative to --videos")
    clip_id_column: str = cfg("", "column with a unique clip id; empty = video stem (+ time range)")
    label_column: str = cfg("label", "single-label column (names or indices); empty = none")
    multi_label_column: str = cfg("", "multi-label column (names or indices joined by multi_label_sep)")
    multi_label_sep: str = cfg(";", "separator inside multi-label cells")
    label_type: Literal["auto", "name", "index"] = cfg(
        "auto", "labels are class names, 0-based indices, or auto (indices when every value is an integer)")
    classes_file: str = cfg("", "one class name per line (the order = index); empty = sorted names seen")
    regression_columns: list[str] = cfg([], "columns with float regression targets, in order")
    split_column: str = cfg("split", "column with train/val/test; a missing column or empty cell uses "
                                     "the file's split (SPLIT=PATH or its name)")
    start_column: str = cfg("", "column with the clip start; empty = whole video")
    end_column: str = cfg("", "column with the clip end (exclusive)")
    time_unit: Literal["sec", "frame", "timestamp"] = cfg("sec", "unit of start/end: seconds, "
                                                                 "frame numbers or HH:MM:SS.ff")
    keep_columns: list[str] = cfg([], "further columns copied to the manifest as text")
    feature_columns: list[str] = cfg([], "columns naming each row's feature file (.npy; absolute or relative "
                                         "to the annotation file's folder; empty cell = none); set by "
                                         "`prepare --feature NAME=COLUMN`")

    def __post_init__(self) -> None:
        if self.multi_label_column and not self.multi_label_sep:
            raise ValueError("multi_label_sep is empty: give the separator, e.g. --set 'multi_label_sep=|'")


def _time(value: str, unit: str, path: Path, where: str, column: str) -> float | int:
    if unit == "frame":
        return parse_int(value, path, where, column)
    if unit == "timestamp":
        return parse_timestamp(value, path, where)
    return parse_float(value, path, where, column)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


# Cells that mean "no value" in exported tables (pandas writes NaN as "nan" or an empty cell).
MISSING_CELLS = {"", "nan", "na", "n/a", "null", "none"}


def _missing(opts: GenericCsvOptions) -> set[str]:
    """Cells that mean "no label": with ``label_type: name`` only the empty one, so a class may be called None or NA."""
    return {""} if opts.label_type == "name" else MISSING_CELLS


def _check_labels(af: AnnotationFile, line: int, r: dict, opts: GenericCsvOptions) -> None:
    """Every row carries a label: an empty or NaN cell is an error naming file, line and column. A
    multi-label column alone may be empty: that clip has none of the classes (a negative for every one)."""
    if not opts.label_column:
        return
    cols = [c for c in (opts.label_column, opts.multi_label_column) if c]
    missing = _missing(opts)
    cells = [(r.get(c) or "").strip() for c in cols]
    if cols and all(v.lower() in missing for v in cells):
        hint = "; for a class named so, --set label_type=name" if any(cells) else ""
        raise ConverterError(af.path, f"empty or NaN label in column {' / '.join(map(repr, cols))}{hint}",
                             f"line {line}")


def _index_classes(records: list, opts: GenericCsvOptions, cells) -> list[str]:
    """Class names "0".."N-1" for index labels without a class list. N is the largest index + 1 only
    when every index below it is used: a stray large index would otherwise invent empty classes."""
    seen: dict[int, tuple] = {}
    for af, _, line, r in records:
        for v in cells(r):
            if not _is_int(v):
                raise ConverterError(af.path, f"column {opts.label_column or opts.multi_label_column!r}: "
                                              f"{v!r} is not an integer class index", f"line {line}")
            if int(v) < 0:
                raise ConverterError(af.path, f"label {v} is negative", f"line {line}")
            seen.setdefault(int(v), (af, line))
    if not seen:
        return []
    top = max(seen)
    unused = [i for i in range(top) if i not in seen]
    if unused:
        af, line = seen[top]
        raise ConverterError(af.path, f"label {top} would make {top + 1} classes, but {len(unused)} index(es) below "
                                      f"it never occur (e.g. {unused[:5]}): give the class list with "
                                      f"--set classes_file=PATH", f"line {line}")
    return [str(i) for i in range(top + 1)]


def _refuse_mixed_labels(records: list, opts: GenericCsvOptions, cells) -> None:
    """label_type=auto: integer labels with a few other values among them are most likely a typo (a
    stray ``1.5`` among 0/1), not class names: say where instead of silently reading names."""
    ints = others = 0
    first = None
    for af, _, line, r in records:
        for v in cells(r):
            if _is_int(v):
                ints += 1
            else:
                others += 1
                first = first or (af, line, v)
    if ints and others:
        af, line, v = first
        raise ConverterError(af.path, f"label {v!r} is not an integer, but {ints} other label(s) are ({others} are "
                                      f"not): fix the cell, or --set label_type=name to read every label as a "
                                      f"class name", f"line {line}")


def parse(files: list[AnnotationFile], opts: GenericCsvOptions, finder: VideoFinder) -> Converted:
    records = []
    for af in files:
        need = [opts.video_column] + [c for c in (opts.clip_id_column, opts.start_column, opts.end_column,
                                                  opts.label_column, opts.multi_label_column)
                                      if c] + list(opts.regression_columns) + list(opts.keep_columns)
        header, rows = read_csv(af.path, need)
        for c in opts.feature_columns:
            if c not in header:
                raise ConverterError(af.path, f"feature column {c!r} is not in the header {header} "
                                              f"(and no file or folder of that name exists)")
        for line, r in rows:
            _check_labels(af, line, r, opts)
            records.append((af, header, line, r))

    def cells(r: dict) -> list[str]:
        out = []
        if opts.label_column and r.get(opts.label_column):
            out.append(r[opts.label_column])
        return out + multi(r)

    def multi(r: dict) -> list[str]:
        """The multi-label cell's class names or indices ([] for an empty or NaN cell)."""
        raw = (r.get(opts.multi_label_column) or "") if opts.multi_label_column else ""
        if raw.strip().lower() in _missing(opts):
            return []
        return [v.strip() for v in raw.split(opts.multi_label_sep) if v.strip()]

    values = [v for *_, r in records for v in cells(r)]
    if opts.label_type == "auto" and not opts.classes_file:
        _refuse_mixed_labels(records, opts, cells)
    by_index = opts.label_type == "index" or (opts.label_type == "auto" and values and all(map(_is_int, values)))
    if opts.classes_file:
        class_names = read_class_list(Path(opts.classes_file))
    elif by_index:
        class_names = _index_classes(records, opts, cells)
    else:
        class_names = sorted(set(values))
    if not class_names and (opts.label_column or opts.multi_label_column):
        cols = " / ".join(repr(c) for c in (opts.label_column, opts.multi_label_column) if c)
        raise ConverterError(files[0].path, f"no row names a class in column {cols}: nothing to learn")
    index = {c: i for i, c in enumerate(class_names)}

    def to_index(v: str, af: AnnotationFile, where: str, cid: str) -> int:
        if by_index:
            if not _is_int(v):
                raise ConverterError(af.path, f"label {v!r} is not an integer class index", where, cid)
            i = int(v)
            if not 0 <= i < len(class_names):
                raise ConverterError(af.path, f"label {i} outside [0, {len(class_names)})", where, cid)
            return i
        if v not in index:
            raise ConverterError(af.path, f"label {v!r} is not a known class", where, cid)
        return index[v]

    out = []
    feature_files: dict[str, dict[str, str]] = {c: {} for c in opts.feature_columns}
    for af, header, line, r in records:
        where = f"line {line}"
        video = r[opts.video_column]
        if not video:
            raise ConverterError(af.path, f"empty {opts.video_column!r}", where)
        fields: dict = {}
        key = "frame" if opts.time_unit == "frame" else "sec"
        suffix = ""
        for col, name in ((opts.start_column, f"start_{key}"), (opts.end_column, f"end_{key}")):
            if col and r.get(col):
                fields[name] = _time(r[col], opts.time_unit, af.path, where, col)
                suffix += f"_{fields[name]}"
        cid = r[opts.clip_id_column] if opts.clip_id_column else Path(video).stem + suffix
        if opts.split_column in header and r.get(opts.split_column):
            split = normalise_split(r[opts.split_column], af.path, where)
        else:
            split = af.require_split()
        if opts.label_column and r.get(opts.label_column):
            fields["label"] = to_index(r[opts.label_column], af, where, cid)
        if opts.multi_label_column:
            fields["multi_label"] = sorted({to_index(v, af, where, cid) for v in multi(r)})
        if opts.regression_columns:
            fields["regression"] = [parse_float(r[c], af.path, where, c) for c in opts.regression_columns]
        for c in opts.keep_columns:
            fields[c] = r[c]
        for c in opts.feature_columns:
            if (r.get(c) or "").lower() not in MISSING_CELLS:
                feature_files[c][cid] = str(af.path.parent / r[c])  # an absolute cell stays absolute
        out.append(PendingRow(cid, split, str(af.path), where, [video], [Path(video).name], fields))
    return Converted(out, class_names, "csv", regression_names=list(opts.regression_columns) or None,
                     feature_files=feature_files)


register_format("csv", GenericCsvOptions, parse, "any CSV, one row per clip, through a column mapping")
