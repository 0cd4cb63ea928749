"""Epic-Kitchens-100 action segments -> manifest rows (segments inside long videos).

Annotation files (github.com/epic-kitchens/epic-kitchens-100-annotations), told apart by header:
  EPIC_100_train.csv / EPIC_100_validation.csv: narration_id, participant_id, video_id,
    narration_timestamp, start_timestamp, stop_timestamp ("HH:MM:SS.ff"), start_frame,
    stop_frame, narration, verb, verb_class, noun, noun_class, all_nouns, all_noun_classes
  EPIC_100_test_timestamps.csv: the same without narration and classes (unlabelled, split test)
  EPIC_100_verb_classes.csv / EPIC_100_noun_classes.csv: id, key, instances, category
    (optional; they give the class names and the full class counts, 97 verbs / 300 nouns)
Videos: <participant_id>/videos/<video_id>.MP4 (the official layout), <participant_id>/<video_id>.MP4
or flat. Segments use the timestamps (seconds), so re-encoded videos at another frame rate still
line up; `use_frames` writes the annotation frame numbers instead (native-rate videos only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.config import cfg
from components.data.converters.base import (AnnotationFile, Converted, ConverterError, PendingRow,
                                             VideoFinder, parse_int, parse_timestamp, read_csv)
from components.data.converters.registry import register_format

SEGMENT_COLUMNS = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp")


@dataclass
class EpicKitchensOptions:
    label: Literal["verb", "noun", "action"] = cfg("verb", "the label column: verb_class, noun_class, "
                                                   "or action (a (verb, noun) pair index)")
    action_index: Literal["pairs", "product"] = cfg(
        "pairs", "action classes: pairs = the sorted (verb, noun) pairs seen in the given files "
        "(convert train and validation together so both agree), product = verb * num_nouns + noun "
        "(stable, needs the class files)")
    use_frames: bool = cfg(False, "write start_frame/stop_frame instead of the timestamps")


def _class_file(af: AnnotationFile) -> str | None:
    name = af.path.name.lower()
    return "verb" if "verb" in name else "noun" if "noun" in name else None


def _read_classes(af: AnnotationFile) -> list[str]:
    _, rows = read_csv(af.path, ("id", "key"))
    by_id = {}
    for line, r in rows:
        by_id[parse_int(r["id"], af.path, f"line {line}", "id")] = r["key"]
    if sorted(by_id) != list(range(len(by_id))):
        raise ConverterError(af.path, "class ids are not 0..N-1")
    return [by_id[i] for i in range(len(by_id))]


def _names(found: dict[int, str], given: list[str] | None, kind: str) -> list[str]:
    if given is not None:
        return given
    n = max(found, default=-1) + 1
    return [found.get(i, f"{kind}_{i}") for i in range(n)]


def parse(files: list[AnnotationFile], opts: EpicKitchensOptions, finder: VideoFinder) -> Converted:
    given: dict[str, list[str]] = {}
    segments: list[tuple[AnnotationFile, int, dict]] = []
    for af in files:
        header, rows = read_csv(af.path)
        if "narration_id" not in header:
            kind = _class_file(af)
            if kind is None or "key" not in header:
                raise ConverterError(af.path, "neither a segment file (narration_id, ...) nor a "
                                              "verb/noun class file (id, key, ...)")
            given[kind] = _read_classes(af)
            continue
        missing = [c for c in SEGMENT_COLUMNS if c not in header]
        if missing:
            raise ConverterError(af.path, f"missing column(s) {missing}")
        af.require_split()
        segments.extend((af, line, r) for line, r in rows)

    # Class names: from the class files, else from the verb/noun words of the segments.
    seen_verbs: dict[int, str] = {}
    seen_nouns: dict[int, str] = {}
    pairs: set[tuple[int, int]] = set()
    parsed = []
    for af, line, r in segments:
        where = f"line {line}"
        v = n = None
        if r.get("verb_class") not in (None, ""):
            v = parse_int(r["verb_class"], af.path, where, "verb_class")
            n = parse_int(r.get("noun_class"), af.path, where, "noun_class")
            seen_verbs.setdefault(v, r.get("verb") or f"verb_{v}")
            seen_nouns.setdefault(n, r.get("noun") or f"noun_{n}")
            pairs.add((v, n))
        parsed.append((af, line, r, v, n))
    verbs = _names(seen_verbs, given.get("verb"), "verb")
    nouns = _names(seen_nouns, given.get("noun"), "noun")
    if opts.label == "verb":
        class_names = verbs
    elif opts.label == "noun":
        class_names = nouns
    elif opts.action_index == "product":
        if "verb" not in given or "noun" not in given:
            raise ConverterError(files[0].path, "action_index=product needs EPIC_100_verb_classes.csv "
                                                "and EPIC_100_noun_classes.csv among the annotations")
        class_names = [f"{a} {b}" for a in verbs for b in nouns]
    else:
        ordered = sorted(pairs)
        pair_index = {p: i for i, p in enumerate(ordered)}
        class_names = [f"{verbs[a]} {nouns[b]}" for a, b in ordered]

    out, dropped = [], []
    for af, line, r, v, n in parsed:
        where, cid = f"line {line}", r["narration_id"]
        start = parse_timestamp(r["start_timestamp"], af.path, where)
        stop = parse_timestamp(r["stop_timestamp"], af.path, where)
        if stop <= start:  # a few segments in the release are empty; they cannot be sampled
            dropped.append({"file": str(af.path), "where": where, "clip_id": cid,
                            "reason": f"empty segment [{start}, {stop}) s"})
            continue
        label = None
        if v is not None:
            label = {"verb": v, "noun": n}.get(opts.label)
            if opts.label == "action":
                label = v * len(nouns) + n if opts.action_index == "product" else pair_index[(v, n)]
        fields = {"label": label, "verb_class": v, "noun_class": n,
                  "video_id": r["video_id"], "narration": r.get("narration")}
        if opts.use_frames:
            fields["start_frame"] = parse_int(r.get("start_frame"), af.path, where, "start_frame")
            fields["end_frame"] = parse_int(r.get("stop_frame"), af.path, where, "stop_frame")
        else:
            fields["start_sec"], fields["end_sec"] = start, stop
        pid, vid = r["participant_id"], r["video_id"]
        videos = [f"{pid}/videos/{vid}.MP4", f"{pid}/videos/{vid}.mp4", f"{pid}/{vid}.MP4",
                  f"{pid}/{vid}.mp4", f"{vid}.MP4", f"{vid}.mp4"]
        out.append(PendingRow(cid, af.require_split(), str(af.path), where, videos,
                              [f"{vid}.mp4"], fields))
    return Converted(out, class_names, "epic_kitchens_100", dropped=dropped)


register_format("epic-kitchens-100", EpicKitchensOptions, parse,
                "EPIC_100_{train,validation}.csv (+ test_timestamps, verb/noun class files)")
