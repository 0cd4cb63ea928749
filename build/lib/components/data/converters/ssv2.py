"""Something-Something v2 JSON -> manifest rows.

something-something-v2-labels.json: {"<template without brackets>": "<index>", ...}
something-something-v2-{train,validation}.json: [{"id": "78687", "label": "holding potato next
  to vicks vaporub bottle", "template": "Holding [something] next to [something]",
  "placeholders": ["potato", "vicks vaporub bottle"]}, ...]
something-something-v2-test.json: [{"id": "1420"}, ...] (unlabelled)
The class is the template with its brackets removed, looked up in the labels file; videos are
<id>.webm. The filled-in `label` text is kept as the `caption` column (for text-side models).
Left-right classes ("Pushing something from left to right") flip meaning under a horizontal
flip: train SSv2 with augmentation flip off.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.config import cfg
from components.data.converters.base import (AnnotationFile, Converted, ConverterError, PendingRow,
                                             VideoFinder, read_json)
from components.data.converters.registry import register_format


@dataclass
class SSv2Options:
    extensions: list[str] = cfg([".webm", ".mp4"], "video file extensions to look for")


def template_key(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def parse(files: list[AnnotationFile], opts: SSv2Options, finder: VideoFinder) -> Converted:
    labels: dict[str, int] | None = None
    splits = []
    for af in files:
        data = read_json(af.path)
        if isinstance(data, dict):
            try:
                labels = {str(k): int(v) for k, v in data.items()}
            except (TypeError, ValueError):
                raise ConverterError(af.path, "labels file must map template -> index") from None
        elif isinstance(data, list):
            splits.append((af, af.require_split(), data))
        else:
            raise ConverterError(af.path, "expected a JSON list of videos or a labels mapping")
    if labels is None:
        raise ConverterError(files[0].path, "no labels file (something-something-v2-labels.json) "
                                            "among the annotations")
    if sorted(labels.values()) != list(range(len(labels))):
        raise ConverterError(files[0].path, "label indices are not 0..N-1")
    class_names = sorted(labels, key=labels.__getitem__)

    out = []
    for af, split, entries in splits:
        for i, e in enumerate(entries):
            where = f"entry {i}"
            if not isinstance(e, dict) or "id" not in e:
                raise ConverterError(af.path, "entry has no 'id'", where)
            cid = str(e["id"])
            label = None
            if "template" in e:
                key = template_key(e["template"])
                if key not in labels:
                    raise ConverterError(af.path, f"template {key!r} is not in the labels file", where, cid)
                label = labels[key]
            names = [cid + ext for ext in opts.extensions]
            out.append(PendingRow(cid, split, str(af.path), where, names, names,
                                  {"label": label, "caption": e.get("label")}))
    return Converted(out, class_names, "ssv2")


register_format("ssv2", SSv2Options, parse,
                "Something-Something v2 JSON (labels + train/validation/test lists)")
