"""HMDB51 split files -> manifest rows.

testTrainMulti_7030_splits/<class>_test_split<K>.txt, one per class and fold K (1-3), lines
"<video>.avi <0|1|2>": 1 = train, 2 = test, 0 = not used in this fold (left out, listed in the
skip list). Pass the folder or the files. Classes are the sorted class names (51).
Videos: <class>/<video>.avi or flat.
"""

from __future__ import annotations

import re

from components.data.converters.base import (AnnotationFile, Converted, ConverterError, PendingRow,
                                             VideoFinder, read_lines)
from components.data.converters.registry import register_format
from components.data.converters.ucf101 import SplitListOptions, expand

_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>[123])\.txt$")


def parse(files: list[AnnotationFile], opts: SplitListOptions, finder: VideoFinder) -> Converted:
    per_class = {}
    for p in expand(files):
        m = _SPLIT_FILE.match(p.name)
        if m is None:
            raise ConverterError(p, "not an HMDB51 split file (<class>_test_split<K>.txt)")
        if int(m["fold"]) == opts.fold:
            per_class[m["cls"]] = p
    if not per_class:
        raise ConverterError(files[0].path, f"no split files for fold {opts.fold}")
    class_names = sorted(per_class)
    out, dropped = [], []
    for label, cls in enumerate(class_names):
        path = per_class[cls]
        for line, text in read_lines(path):
            where = f"line {line}"
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ConverterError(path, f"expected '<video> <0|1|2>', got {text!r}", where)
            name, code = parts
            cid = name.rsplit(".", 1)[0]
            if code == "0":
                dropped.append({"file": str(path), "where": where, "clip_id": cid,
                                "reason": f"not used in fold {opts.fold} (code 0)"})
                continue
            split = "train" if code == "1" else opts.test_split
            out.append(PendingRow(cid, split, str(path), where, [f"{cls}/{name}", name], [name],
                                  {"label": label}))
    return Converted(out, class_names, "hmdb51", dropped=dropped)


register_format("hmdb51", SplitListOptions, parse,
                "HMDB51 testTrainMulti_7030_splits (<class>_test_split<K>.txt)")
