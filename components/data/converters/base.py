"""What every annotation converter shares: errors that name the file and line, annotation
files tagged with a split, candidate rows, finding videos on disk, and writing the manifest.

A converter only parses its native format into `PendingRow`s (clip id, split, labels, time
range, candidate video paths). `build_manifest` then looks the videos up, applies the
missing-video policy, checks ids are unique and writes a validated manifest. That keeps the
file-system and policy logic in one place and the per-format files short.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Sequence
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from components.data.features import FeatureSource, FeatureStats, add_features
from components.data.manifest import SPLITS, ManifestError, write_manifest
from components.io import is_remote, join, list_files, local_path

MISSING_POLICIES = ("error", "skip")

# File-name words that tell the split (EPIC_100_validation.csv, something-something-v2-train.json).
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "validate": "val", "test": "test", "testing": "test"}


class ConverterError(ManifestError):
    """A problem in an annotation file; the message names the file, the line/entry and clip."""

    def __init__(self, path: str | os.PathLike, reason: str, where: str | None = None,
                 clip_id: str | None = None) -> None:
        self.path, self.reason, self.where, self.clip_id = str(path), reason, where, clip_id
        self.row, self.column = None, None  # ManifestError's fields, unused here
        loc = self.path + (f", {where}" if where else "")
        loc += f" (clip_id={clip_id!r})" if clip_id is not None else ""
        ValueError.__init__(self, f"{loc}: {reason}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.reason, self.where, self.clip_id))


@dataclass(frozen=True)
class AnnotationFile:
    """An annotation path; `split` comes from a `SPLIT=PATH` argument or the file name."""

    path: Path
    split: str | None = None

    @classmethod
    def parse(cls, arg: str | os.PathLike) -> AnnotationFile:
        text = str(arg)
        head, sep, tail = text.partition("=")
        if sep and head.lower() in SPLIT_WORDS and not os.path.exists(text):
            return cls(Path(tail), SPLIT_WORDS[head.lower()])
        return cls(Path(text), split_from_name(text))

    def require_split(self) -> str:
        if self.split is None:
            raise ConverterError(self.path, "cannot tell the split from the file name; pass it "
                                            "as SPLIT=PATH (train=, val= or test=)")
        return self.split


def split_from_name(path: str | os.PathLike) -> str | None:
    """train/val/test from the words of a file name, or None when it names no split."""
    words = re.split(r"[^a-z]+", Path(path).name.lower())
    found = {SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


def normalise_split(value: str, path: str | os.PathLike, where: str) -> str:
    split = SPLIT_WORDS.get(str(value).strip().lower())
    if split is None:
        raise ConverterError(path, f"unknown split value {value!r}; expected one of "
                                   f"{sorted(SPLIT_WORDS)}", where)
    return split


@dataclass
class PendingRow:
    """One clip before its video is looked up.

    videos: candidate paths relative to the videos folder, tried in order; names: file names
    looked up anywhere below the folder when no candidate exists (the layouts of downloaded
    datasets vary: per-class folders, per-split folders, flat).
    """

    clip_id: str
    split: str
    source: str  # annotation file
    where: str  # "line 12" / "entry 3"
    videos: Sequence[str] = ()
    names: Sequence[str] = ()
    fields: dict[str, Any] = field(default_factory=dict)  # label, start_sec, multi_label, ...


@dataclass
class Converted:
    """A converter's output: rows, class names and what it dropped itself (with reasons)."""

    rows: list[PendingRow]
    class_names: list[str]
    dataset: str
    regression_names: list[str] | None = None
    dropped: list[dict[str, str]] = field(default_factory=list)
    feature_files: dict[str, dict[str, str]] = field(default_factory=dict)  # column -> clip id -> file


# ---------------------------------------------------------------- reading annotation files

def read_csv(path: Path, required: Sequence[str] = ()) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """(header, iterator of (line number, row dict)); a missing required column names the file."""
    if not path.is_file():
        raise ConverterError(path, "annotation file not found")
    f = open(path, newline="", encoding="utf-8-sig")  # -sig: some exports start with a BOM
    reader = csv.DictReader(f)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except (UnicodeDecodeError, csv.Error) as e:
        f.close()
        raise _unreadable(path, e, 1) from None
    if not header:
        f.close()
        raise ConverterError(path, "empty file: no header row")
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    if missing:
        f.close()
        raise ConverterError(path, f"missing column(s) {missing}; the header has {header}")

    def rows() -> Iterator[tuple[int, dict]]:
        with f:
            try:
                for row in reader:
                    if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                        continue  # blank line
                    yield reader.line_num, {k: (v.strip() if isinstance(v, str) else v)
                                            for k, v in row.items()}
            except (UnicodeDecodeError, csv.Error) as e:
                raise _unreadable(path, e, reader.line_num + 1) from None

    return header, rows()


def _unreadable(path: Path, e: Exception, line: int) -> ConverterError:
    what = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"not a readable CSV ({e})"
    return ConverterError(path, f"{what}; save it as UTF-8 CSV", f"near line {line}")


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-empty stripped lines with 1-based numbers (copes with CRLF split files)."""
    if not path.is_file():
        raise ConverterError(path, "annotation file not found")
    with open(path, encoding="utf-8-sig") as f:
        for i, line in enumerate(f, start=1):
            line = line.strip()
            if line:
                yield i, line


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise ConverterError(path, "annotation file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConverterError(path, f"invalid JSON: {e}") from None


def parse_timestamp(text: str, path: Path, where: str) -> float:
    """Seconds from "HH:MM:SS.ff", "MM:SS.ff" or plain seconds."""
    try:
        parts = [float(p) for p in str(text).strip().split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
        raise ConverterError(path, f"bad timestamp {text!r}; expected HH:MM:SS.ff", where)
    secs = 0.0
    for p in parts:
        secs = secs * 60 + p
    return secs


def parse_int(text: Any, path: Path, where: str, column: str) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        raise ConverterError(path, f"column {column!r}: {text!r} is not an integer", where) from None


def parse_float(text: Any, path: Path, where: str, column: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConverterError(path, f"column {column!r}: {text!r} is not a number", where) from None


def read_class_list(path: Path) -> list[str]:
    """Class names, one per line (order = class index)."""
    names = [line for _, line in read_lines(path)]
    if len(set(names)) != len(names):
        raise ConverterError(path, "duplicate class name in the class list")
    return names


# ---------------------------------------------------------------- finding videos

class VideoFinder:
    """Looks videos up below one folder: exact relative paths first, then by file name.

    The by-name index (lower-cased names, built on first need with one walk) makes per-class,
    per-split and flat layouts all work; a name present twice is ambiguous and not used.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self._packed: dict[str, dict] = {}  # a packed dataset: source video -> its (shard, member) columns
        if str(root).endswith(".parquet"):
            self._load_packed(str(root))
            return
        self.remote = is_remote(root)
        # a bucket prefix (s3://bucket/k400/) is listed once: every lookup is then in memory
        self.root = str(root).rstrip("/") if self.remote else Path(local_path(root)).absolute()
        self._objects: set[str] | None = None
        if self.remote:
            self._objects = set(list_files(self.root + "/"))
            if not self._objects:
                raise FileNotFoundError(f"videos folder not found: {self.root} (no objects below it)")
        elif not self.root.is_dir():
            raise FileNotFoundError(f"videos folder not found: {self.root}")
        self._index: dict[str, list[str]] | None = None

    def _load_packed(self, manifest: str) -> None:
        """Videos given as a packed manifest (`vidpeft pack`): looked up by their source paths."""
        from components.data.manifest import read_manifest
        from components.data.packed import PACKED_COLUMNS, is_packed

        m = read_manifest(manifest, check_files=False)
        if not is_packed(m.table):
            raise FileNotFoundError(f"--videos {manifest}: not a packed manifest (`vidpeft pack` writes one)")
        cols = ["video_path", *PACKED_COLUMNS]
        for r in m.table.select(cols).to_pylist():
            self._packed[r["source_path"]] = {"video_path": r["video_path"], **{c: r[c] for c in PACKED_COLUMNS}}
        # looked up by file name (relative layouts name the source folders, which packing left behind)
        self.remote, self.root, self._objects, self._index = True, manifest, set(), None
        for source in self._packed:
            self._objects.add(source)

    def columns(self, found: str) -> dict:
        """The manifest columns of a video ``find`` returned: its path, or a packed member's (shard, member)."""
        return dict(self._packed[found]) if self._packed else {"video_path": found}

    def _by_name(self) -> dict[str, list[str]]:
        if self._index is None:
            index: dict[str, list[str]] = {}
            if self._objects is not None:
                for obj in sorted(self._objects | set(self._packed)):
                    index.setdefault(obj.rsplit("/", 1)[-1].lower(), []).append(obj)
            for dirpath, _, files in ([] if self.remote else os.walk(self.root, followlinks=True)):
                for name in files:
                    index.setdefault(name.lower(), []).append(os.path.join(dirpath, name))
            self._index = index
        return self._index

    def find(self, videos: Sequence[str], names: Sequence[str] = ()) -> tuple[str | None, str]:
        """(absolute path or URI, or None; reason when None). A path written on Windows (``a\\b.mp4``) is
        also tried with forward slashes."""
        videos = list(videos) + [v.replace("\\", "/") for v in videos if "\\" in v and os.sep != "\\"]
        for rel in videos:
            if self._objects is not None:
                p = join(self.root + "/", rel)
                if p in self._objects:
                    return p, ""
                continue
            p = self.root / rel
            if p.is_file():
                return str(p), ""
        ambiguous = []
        for name in names:
            hits = self._by_name().get(name.lower(), [])
            if len(hits) == 1:
                return hits[0], ""
            if hits:
                ambiguous.append(f"{name} ({len(hits)} files)")
        tried = list(videos) + [f"*/{n}" for n in names]
        if ambiguous:
            return None, f"ambiguous video name under {self.root}: {', '.join(ambiguous)}"
        return None, f"video not found under {self.root} (tried {', '.join(tried[:6])}" + (
            ", ...)" if len(tried) > 6 else ")")


# ---------------------------------------------------------------- writing the manifest

@dataclass
class ConvertReport:
    manifest: Path
    rows: int
    splits: dict[str, int]
    num_classes: int
    skipped: list[dict[str, str]]  # {"file", "where", "clip_id", "reason"}
    skip_list: Path | None
    features: list[FeatureStats] = field(default_factory=list)
    no_class: int = 0  # multi-label clips with none of the classes (negatives for every one)


def build_manifest(converted: Converted, finder: VideoFinder, out: str | os.PathLike,
                   missing: str = "error", relative_paths: bool = False,
                   dataset: str | None = None, features: Sequence[FeatureSource] = ()) -> ConvertReport:
    """Resolve videos, apply the missing policy, join `features`, write `out` (+ `<out>.skipped.csv`
    if any). Nothing is left at `out` when a step fails: the manifest is built under a temporary
    name in the same folder and renamed at the end."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    out = Path(out).absolute()
    skipped = list(converted.dropped)
    rows: list[dict[str, Any]] = []
    origins = []  # the annotation record of each row, to name its file and line in an error
    seen: dict[str, str] = {}
    for r in converted.rows:
        if r.split not in SPLITS:
            raise ConverterError(r.source, f"split {r.split!r} is not one of {SPLITS}", r.where, r.clip_id)
        if r.clip_id in seen:
            raise ConverterError(r.source, f"duplicate clip id (first at {seen[r.clip_id]}); ids default to the "
                                           "file name without its extension: --set clip_id_column=COLUMN gives "
                                           "each row its own (e.g. video_path)", r.where, r.clip_id)
        seen[r.clip_id] = f"{r.source}, {r.where}"
        path, reason = finder.find(r.videos, r.names)
        if path is None:
            if missing == "error":
                raise ConverterError(r.source, reason + "; use --missing skip to leave such "
                                                        "rows out", r.where, r.clip_id)
            skipped.append({"file": r.source, "where": r.where, "clip_id": r.clip_id,
                            "reason": reason})
            continue
        columns = finder.columns(path)
        if relative_paths and not is_remote(columns["video_path"]):
            columns["video_path"] = os.path.relpath(columns["video_path"], out.parent)
        rows.append({"clip_id": r.clip_id, **columns, "split": r.split,
                     "dataset": dataset or converted.dataset, **r.fields})
        origins.append(r)
    if not rows:
        raise ConverterError(out, f"no rows left to write ({len(skipped)} skipped; the first: "
                                  f"{skipped[0]['reason'] if skipped else 'none'})")
    # Time columns are float64; a converter may leave them out entirely.
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial.parquet", dir=out.parent)
    os.close(fd)
    try:
        try:
            write_manifest(tmp, rows, converted.class_names, feature_dims={},
                           regression_names=converted.regression_names)
        except ManifestError as e:  # a bad value in a row: name its annotation line, not the temporary file
            if isinstance(e, ConverterError) or e.row is None or e.row >= len(origins):
                raise
            r = origins[e.row]
            raise ConverterError(r.source, f"column {e.column!r}: {e.reason}" if e.column else e.reason,
                                 r.where, r.clip_id) from None
        stats = add_features(tmp, [_with_files(s, converted) for s in features]) if features else []
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    skip_list = None
    if skipped:
        skip_list = out.with_name(out.name + ".skipped.csv")
        with open(skip_list, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file", "where", "clip_id", "reason"])
            w.writeheader()
            w.writerows(skipped)
    splits: dict[str, int] = {}
    for row in rows:
        splits[row["split"]] = splits.get(row["split"], 0) + 1
    no_class = sum(1 for row in rows if row.get("multi_label") == [] and row.get("label") is None)
    return ConvertReport(out, len(rows), dict(sorted(splits.items())), len(converted.class_names),
                         skipped, skip_list, stats, no_class)


def _with_files(src: FeatureSource, converted: Converted) -> FeatureSource:
    """A source read from an annotation column gets the converter's clip id -> file map."""
    if not src.path_column:
        return src
    return replace(src, files=converted.feature_files[src.path_column])
