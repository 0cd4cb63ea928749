"""Kinetics-400/600/700 CSVs -> manifest rows.

CSV columns: label, youtube_id, time_start, time_end, split (+ is_cc in some releases); test
CSVs of some releases have no label column (rows come out unlabelled). Split values train / val /
validate / test. Downloaded clips are trimmed to [time_start, time_end] and named
<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>, under <split>/<label>/, <label>/ (label with
spaces or underscores) or flat: they are found by file name wherever they are. With
`trimmed: false` the videos are whole YouTube videos <youtube_id>.<ext> and the clip is the
[time_start, time_end] segment of it.
Classes: the sorted label names of all given CSVs (the usual Kinetics order), or a class list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.config import cfg
from components.data.converters.base import (AnnotationFile, Converted, ConverterError, PendingRow,
                                             VideoFinder, normalise_split, parse_float,
                                             read_class_list, read_csv)
from components.data.converters.registry import register_format


@dataclass
class KineticsOptions:
    classes_file: str = cfg("", "text file with one class name per line (the class order); "
                                "empty = sorted labels of the given CSVs")
    trimmed: bool = cfg(True, "videos are the downloaded 10 s clips (true) or whole YouTube videos")
    extensions: list[str] = cfg([".mp4", ".mkv", ".webm"], "video file extensions to look for")


def parse(files: list[AnnotationFile], opts: KineticsOptions, finder: VideoFinder) -> Converted:
    records = []
    labels: set[str] = set()
    for af in files:
        header, rows = read_csv(af.path, ("youtube_id", "time_start", "time_end"))
        if "split" not in header:
            af.require_split()
        for line, r in rows:
            where = f"line {line}"
            split = normalise_split(r["split"], af.path, where) if r.get("split") else af.require_split()
            label = r.get("label") or None
            if label is not None:
                labels.add(label)
            start = parse_float(r["time_start"], af.path, where, "time_start")
            end = parse_float(r["time_end"], af.path, where, "time_end")
            records.append((af, where, split, label, r["youtube_id"], start, end))

    class_names = (read_class_list(Path(opts.classes_file)) if opts.classes_file
                   else sorted(labels))
    index = {c: i for i, c in enumerate(class_names)}
    out = []
    for af, where, split, label, yid, start, end in records:
        stem = f"{yid}_{int(start):06d}_{int(end):06d}"
        if label is not None and label not in index:
            raise ConverterError(af.path, f"label {label!r} is not in {opts.classes_file}", where, stem)
        fields = {"label": index[label] if label is not None else None}
        if opts.trimmed:
            names = [stem + ext for ext in opts.extensions]
            # The common per-class layout first (cheap stat); other layouts go by file name.
            videos = [f"{split}/{label}/{names[0]}", f"{label}/{names[0]}"] if label else []
        else:
            names = [yid + ext for ext in opts.extensions]
            videos = []
            fields.update(start_sec=start, end_sec=end)
        out.append(PendingRow(stem, split, str(af.path), where, videos, names, fields))
    return Converted(out, class_names, "kinetics")


register_format("kinetics", KineticsOptions, parse,
                "Kinetics-400/600/700 CSV (label, youtube_id, time_start, time_end, split)")
