"""UDIVA v0.5 per-participant recordings -> OCEAN regression rows.

The release is access-controlled; this converter reads the layout of its metadata files:
  parts_<split>.csv     one row per participant: ID, ..., OPENNESS, CONSCIENTIOUSNESS,
                        EXTRAVERSION, AGREEABLENESS, NEUROTICISM (the five targets)
  sessions_<split>.csv  one row per session: ID, PART.1, PART.2 (participant IDs)
Recordings: for session S (6-digit ID), task T in talk/animals/ghost/lego (letters T/A/G/L), the
frontal camera of participant k (1 or 2) is FC<k>_<letter>.mp4 under <task>/<S>/, <S>/ or
<split>/<task>/<S>/. FC1 is assumed to film PART.1 and FC2 PART.2. Each (session, task,
participant) video is one clip whose targets are that participant's scores; with `window_sec`
> 0 it is cut into windows of that length (probing each video's duration).
"""

from __future__ import annotations

from dataclasses import dataclass

from components.config import cfg
from components.data.converters.base import (AnnotationFile, Converted, ConverterError, PendingRow,
                                             VideoFinder, parse_float, read_csv)
from components.data.converters.registry import register_format

OCEAN = ("OPENNESS", "CONSCIENTIOUSNESS", "EXTRAVERSION", "AGREEABLENESS", "NEUROTICISM")
TASKS = {"talk": "T", "animals": "A", "ghost": "G", "lego": "L"}


@dataclass
class UdivaOptions:
    tasks: list[str] = cfg(["talk", "animals", "ghost", "lego"], "tasks to include (talk, animals, ghost, lego)")
    window_sec: float = cfg(0.0, "cut each recording into windows of this many seconds (0 = one clip per video)")

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {sorted(TASKS)}, got {self.tasks}")
        if self.window_sec < 0:
            raise ValueError("window_sec must be >= 0")


def _traits(header: list[str]) -> dict[str, str]:
    """Trait name -> column, matching without case."""
    lower = {h.lower(): h for h in header}
    return {t: lower[t.lower()] for t in OCEAN if t.lower() in lower}


def parse(files: list[AnnotationFile], opts: UdivaOptions, finder: VideoFinder) -> Converted:
    scores: dict[str, list[float]] = {}
    sessions = []
    for af in files:
        header, rows = read_csv(af.path, ("ID",))
        if "PART.1" in header:
            split = af.require_split()
            sessions.extend((af, split, line, r) for line, r in rows)
            continue
        cols = _traits(header)
        if len(cols) != len(OCEAN):
            raise ConverterError(af.path, f"neither a sessions file (ID, PART.1, PART.2) nor a participants "
                                          f"file with the columns {list(OCEAN)}")
        for line, r in rows:
            where = f"line {line}"
            scores[r["ID"]] = [parse_float(r[cols[t]], af.path, where, cols[t]) for t in OCEAN]
    if not sessions:
        raise ConverterError(files[0].path, "no sessions file (ID, PART.1, PART.2) among the annotations")

    out = []
    for af, split, line, r in sessions:
        where = f"line {line}"
        sid = r["ID"].zfill(6)
        for k in (1, 2):
            pid = r.get(f"PART.{k}")
            if pid not in scores:
                raise ConverterError(af.path, f"participant PART.{k}={pid!r} has no scores in the "
                                              f"participants file", where, sid)
            for task in opts.tasks:
                name = f"FC{k}_{TASKS[task]}.mp4"
                videos = [f"{task}/{sid}/{name}", f"{sid}/{name}", f"{split}/{task}/{sid}/{name}"]
                cid = f"{sid}_{task}_FC{k}"
                out.append(PendingRow(cid, split, str(af.path), where, videos, (),
                                      {"regression": scores[pid], "participant": pid, "session": sid}))
    if opts.window_sec > 0:
        out = _windows(out, opts.window_sec, finder)
    return Converted(out, [], "udiva", regression_names=[t.lower() for t in OCEAN])


def _windows(rows: list[PendingRow], window: float, finder: VideoFinder) -> list[PendingRow]:
    """Split each recording into [i*w, (i+1)*w) windows; needs the videos, so they are probed
    here from the first existing candidate (rows without a video pass through unchanged and the
    missing policy deals with them)."""
    from components.video.decode import VideoDecodeError, probe_video  # lazy: decoders

    out = []
    for r in rows:
        path, _ = finder.find(r.videos)
        if path is None:
            out.append(r)
            continue
        try:
            n, fps, _, _ = probe_video(path, fallback="pyav")
        except VideoDecodeError:
            out.append(r)  # a broken recording: check-videos / the training skip will report it
            continue
        duration = n / fps if fps > 0 else 0.0
        count = max(int(duration // window), 1)
        for i in range(count):
            end = min((i + 1) * window, duration) if duration else (i + 1) * window
            out.append(PendingRow(f"{r.clip_id}_{i:04d}", r.split, r.source, r.where, r.videos, r.names,
                                  {**r.fields, "start_sec": i * window, "end_sec": end}))
    return out


register_format("udiva", UdivaOptions, parse,
                "UDIVA v0.5 parts_<split>.csv + sessions_<split>.csv, per-participant OCEAN targets")
