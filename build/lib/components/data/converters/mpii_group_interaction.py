"""MPIIGroupInteraction bodily-behaviour segments (BBSI annotations) -> multi-label rows.

The annotations are access-controlled, so this converter reads the following assumed layout
(one CSV per split, or one CSV with a split column); adapt the export to it:
  segment_id   (optional) unique id; default <video stem>_<start>_<end>
  video        path of the (per-participant) video, relative to --videos
  start_frame, end_frame   or   start_sec, end_sec   the segment (end exclusive)
  split        (optional) train/val/test; else the file's split (SPLIT=PATH or its name)
  participant  (optional) kept as a column
  <class columns>  one 0/1 column per behaviour class (BBSI has 15, e.g. gesture,
               hand-face, fumbling ...): the header order is the class order.
Every column not named above is a class column unless `classes` lists them explicitly.
A segment with no positive class is kept (an all-negative multi-hot target).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.config import cfg
from components.data.converters.base import (AnnotationFile, Converted, ConverterError, PendingRow,
                                             VideoFinder, normalise_split, parse_float, parse_int,
                                             read_csv)
from components.data.converters.registry import register_format

KNOWN = ("segment_id", "video", "start_frame", "end_frame", "start_sec", "end_sec", "split",
         "participant")


@dataclass
class MpiiGiOptions:
    classes: list[str] = cfg([], "class columns in class order; empty = every column not otherwise known")


def parse(files: list[AnnotationFile], opts: MpiiGiOptions, finder: VideoFinder) -> Converted:
    class_names: list[str] | None = list(opts.classes) or None
    out = []
    for af in files:
        header, rows = read_csv(af.path, ("video",))
        cols = class_names or [c for c in header if c not in KNOWN]
        if class_names is None:
            class_names = cols
        elif cols != class_names or any(c not in header for c in class_names):
            raise ConverterError(af.path, f"class columns {cols} differ from {class_names}")
        if not class_names:
            raise ConverterError(af.path, "no class columns")
        frames = "start_frame" in header
        if not frames and "start_sec" not in header:
            raise ConverterError(af.path, "need start_frame/end_frame or start_sec/end_sec columns")
        for line, r in rows:
            where = f"line {line}"
            if frames:
                s = parse_int(r["start_frame"], af.path, where, "start_frame")
                e = parse_int(r.get("end_frame"), af.path, where, "end_frame")
                fields = {"start_frame": s, "end_frame": e}
            else:
                s = parse_float(r["start_sec"], af.path, where, "start_sec")
                e = parse_float(r.get("end_sec"), af.path, where, "end_sec")
                fields = {"start_sec": s, "end_sec": e}
            cid = r.get("segment_id") or f"{Path(r['video']).stem}_{s}_{e}"
            hot = []
            for i, c in enumerate(class_names):
                v = (r.get(c) or "0").strip()
                if v not in ("0", "1", "0.0", "1.0"):
                    raise ConverterError(af.path, f"class column {c!r} must be 0 or 1, got {v!r}", where, cid)
                if v.startswith("1"):
                    hot.append(i)
            fields["multi_label"] = hot
            if r.get("participant"):
                fields["participant"] = r["participant"]
            split = normalise_split(r["split"], af.path, where) if r.get("split") else af.require_split()
            out.append(PendingRow(cid, split, str(af.path), where, [r["video"]], [Path(r["video"]).name],
                                  fields))
    return Converted(out, class_names or [], "mpii_group_interaction")


register_format("mpii-group-interaction", MpiiGiOptions, parse,
                "MPIIGroupInteraction body-language segments, multi-hot class columns (assumed CSV layout)")
