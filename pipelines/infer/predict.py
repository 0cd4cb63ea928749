"""`vidpeft predict`: batch inference on raw videos with Ray Data.

1) inputs -> one row per clip: video files, folders (searched recursively for video extensions) and
   manifests (their rows, with ranges and side features), checked on the driver;
2) Ray Data: rows -> decoder actors (the run's evaluation decoding; with --window-sec each video becomes
   one row per window) -> a pool of model actors (`--workers`, a GPU each when the cluster has them);
3) the driver streams the results into one Parquet file (never the whole set in memory), printing
   progress, and for a handful of inputs a small table. A video that cannot be decoded is a row with
   its error.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import ConfigError
from components.io import basename, exists, is_remote, list_files, local_path
from components.multihead.config import dataset_heads
from pipelines.infer.predict_core import (SCHEMA, VIDEO_EXTENSIONS, ClipReader, Scorer, check_open_vocabulary, eval_settings,
                                    failed_row, window_ranges)
from pipelines.infer.trained import Trained, check_classes, check_split, load_trained

MANIFEST_EXTENSIONS = (".parquet",)
SHOW_TABLE_UP_TO = 20


def expand_inputs(inputs: list[str], trained: Trained, split: str | None = None) -> pa.Table:
    """Rows (clip_id, video_path, start/end sec and frame, side feature columns) for every input
    (local paths, or s3:// / gs:// / https:// URIs: a bucket prefix is a folder)."""
    modal_cols = {m.column: m.dim for m in trained.cfg.model.modalities}
    rows: list[dict] = []
    for item in inputs:
        if is_remote(item):  # an object, or a bucket prefix taken as a folder
            rows += _remote_input(item, trained, split, modal_cols)
            continue
        path = Path(local_path(item))
        if not path.exists():
            raise FileNotFoundError(f"input not found: {item}")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise ConfigError(f"{item}: folder holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
            rows += [{"clip_id": str(p.relative_to(path).with_suffix("")), "video_path": str(p.absolute())}
                     for p in found]
        elif path.suffix.lower() in MANIFEST_EXTENSIONS:
            rows += _manifest_rows(str(path), trained, split, modal_cols)
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            rows.append({"clip_id": path.stem, "video_path": str(path.absolute())})
        else:
            raise ConfigError(f"{item}: unknown video extension {path.suffix or '(none)'!r} (known: "
                              f"{', '.join(VIDEO_EXTENSIONS)}; manifests: .parquet)")
    for r in rows:
        for key in ("start_sec", "end_sec", "start_frame", "end_frame"):
            r.setdefault(key, None)
        for col in modal_cols:
            r.setdefault(col, None)
    fields = [("clip_id", pa.string()), ("video_path", pa.string()), ("start_sec", pa.float64()),
              ("end_sec", pa.float64()), ("start_frame", pa.int64()), ("end_frame", pa.int64())]
    fields += [(c, pa.list_(pa.float32())) for c in modal_cols]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def _manifest_rows(item: str, trained: Trained, split: str | None, modal_cols: dict) -> list[dict]:
    from components.data.manifest import read_manifest

    from components.data.packed import is_packed

    m = read_manifest(item, check_files=False, feature_columns=[c for c in modal_cols])
    if is_packed(m.table):
        raise ConfigError(f"{item}: a packed manifest (tar shards); predict reads videos: pass the manifest that "
                          f"was packed, or `vidpeft evaluate --manifest` for its metrics")
    check_classes(trained, item, m.class_names)
    table = m.split(split) if split else m.table
    if table.num_rows == 0:
        raise ConfigError(f"{item}: no rows" + (f" in split {split!r}" if split else ""))
    keep = [c for c in ("clip_id", "video_path", "start_sec", "end_sec", "start_frame", "end_frame",
                        *modal_cols) if c in table.column_names]
    return table.select(keep).to_pylist()


def _remote_input(item: str, trained: Trained, split: str | None, modal_cols: dict) -> list[dict]:
    """Rows for an s3:// / gs:// / https:// input: a manifest, a video, or a prefix holding videos."""
    suffix = os.path.splitext(basename(item))[1].lower()
    if suffix in MANIFEST_EXTENSIONS:
        return _manifest_rows(item, trained, split, modal_cols)
    if suffix in VIDEO_EXTENSIONS:
        if not exists(item):
            raise FileNotFoundError(f"input not found: {item}")
        return [{"clip_id": os.path.splitext(basename(item))[0], "video_path": item}]
    prefix = item.rstrip("/") + "/"
    found = list_files(prefix, VIDEO_EXTENSIONS)
    if not found:
        raise ConfigError(f"{item}: no video objects below this prefix ({', '.join(VIDEO_EXTENSIONS)})")
    return [{"clip_id": os.path.splitext(f[len(prefix):])[0], "video_path": f} for f in found]


def _num(v) -> float:
    return float("nan") if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


class PredictDecoder:
    """Ray Data callable class: input rows -> decoded clips (one per window with window_sec)."""

    def __init__(self, settings, modalities: dict[str, tuple[str, int]], window_sec: float, stride_sec: float):
        self.read = ClipReader(settings)
        self.modalities = modalities  # name -> (column, dim)
        self.window_sec, self.stride_sec = window_sec, stride_sec or window_sec

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from components.video.decode import VideoDecodeError

        out: dict[str, list] = {k: [] for k in ("clip_id", "video_path", "start_sec", "end_sec", "error", "video")}
        side: dict[str, list] = {name: [] for name in self.modalities}
        for i in range(len(batch["video_path"])):
            path, clip_id = str(batch["video_path"][i]), str(batch["clip_id"][i])
            frames = {k: None if batch[k][i] is None or np.isnan(batch[k][i]) else int(batch[k][i])
                      for k in ("start_frame", "end_frame")}
            ranges = [(_num(batch["start_sec"][i]), _num(batch["end_sec"][i]))]
            error = ""
            if self.window_sec:
                try:
                    ranges = window_ranges(path, self.window_sec, self.stride_sec, **self.read.decoders)
                except VideoDecodeError as e:
                    error = str(e)
            for start, end in ranges:
                clip = np.zeros(self.read.shape, dtype=np.uint8)
                if not error:
                    try:
                        clip = self.read(path, start_sec=None if math.isnan(start) else start,
                                         end_sec=None if math.isnan(end) else end, **frames)
                    except VideoDecodeError as e:
                        error_here = str(e)
                    else:
                        error_here = ""
                else:
                    error_here = error
                out["clip_id"].append(clip_id)
                out["video_path"].append(path)
                out["start_sec"].append(start)
                out["end_sec"].append(end)
                out["error"].append(error_here)
                out["video"].append(clip)
                for name, (col, dim) in self.modalities.items():
                    value = batch[col][i] if col in batch else None
                    side[name].append(None if value is None else np.asarray(value, dtype=np.float32))
        result = {k: np.array(v, dtype=object) for k, v in out.items() if k not in ("video", "start_sec", "end_sec")}
        result["start_sec"] = np.array(out["start_sec"], dtype=np.float64)
        result["end_sec"] = np.array(out["end_sec"], dtype=np.float64)
        result["video"] = np.stack(out["video"]) if out["video"] else np.zeros((0, *self.read.shape), np.uint8)
        for name, (_, dim) in self.modalities.items():
            result[f"side_{name}"] = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in side[name]])
            result[f"side_{name}_mask"] = np.array([v is not None for v in side[name]], dtype=bool)
        return result


class ModelActor:
    """Ray Data callable class: decoded clips -> prediction-table rows (a model per actor)."""

    def __init__(self, trained: Trained, classes: list[str] | None, top_k: int, threads: int = 0):
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.scorer = Scorer(trained, device, classes, top_k)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        n = len(batch["video_path"])
        meta = [{"clip_id": str(batch["clip_id"][i]), "video_path": str(batch["video_path"][i]),
                 "start_sec": None if np.isnan(batch["start_sec"][i]) else float(batch["start_sec"][i]),
                 "end_sec": None if np.isnan(batch["end_sec"][i]) else float(batch["end_sec"][i])} for i in range(n)]
        ok = np.array([not batch["error"][i] for i in range(n)], dtype=bool)
        rows: list[dict | None] = [None] * n
        if ok.any():
            side = {name: (batch[f"side_{name}"][ok], batch[f"side_{name}_mask"][ok]) for name in self.scorer.modalities
                    if f"side_{name}" in batch}
            scored = self.scorer.rows([m for m, k in zip(meta, ok) if k], self.scorer.scores(batch["video"][ok], side))
            for i, row in zip(np.flatnonzero(ok), scored):
                rows[i] = row
        for i in np.flatnonzero(~ok):
            rows[i] = failed_row(meta[i], str(batch["error"][i]))
        return pa.Table.from_pylist(rows, schema=SCHEMA)


def scored_here(decoded, scorer: dict, batch_size: int, cpus: float):
    """Prediction tables of ``decoded``'s clips, ``batch_size`` at a time, scored in this process by a
    ``ModelActor(**scorer)`` (pipelines/run/in_process.py: ``scores_here``) on the threads Ray would give an
    actor of ``cpus`` CPUs (``threads_as_a_worker``)."""
    from pipelines.run.in_process import threads_as_a_worker

    with threads_as_a_worker(cpus):
        model = ModelActor(**scorer)
        for batch in decoded.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield model(batch)


def show_table(table: pa.Table) -> None:
    print(f"{'video':<28} {'window':>13}  {'label':<18} {'score':>6}  top-k / error")
    for r in table.to_pylist():
        name = Path(r["video_path"]).name
        window = f"{r['start_sec']:.1f}-{r['end_sec']:.1f}s" if r["start_sec"] is not None else "-"
        if r["error"]:
            print(f"{name[-28:]:<28} {window:>13}  {'(error)':<18} {'':>6}  {r['error'][:70]}")
            continue
        rest = ", ".join(f"{lab} {s:.2f}" for lab, s in zip(r["top_k_labels"][1:4], r["top_k_scores"][1:4]))
        label = r["label"] if r["label"] is not None else "(values)"
        score = f"{r['score']:.3f}" if r["score"] is not None else ""
        print(f"{name[-28:]:<28} {window:>13}  {label[:18]:<18} {score:>6}  {rest}")


def check_options(out: str, top_k: int | None, window_sec: float | None, stride_sec: float | None, workers: int,
                  batch_size: int) -> None:
    """The command's own options, before anything is loaded (each error names its option)."""
    if Path(out).suffix.lower() != ".parquet":
        raise ConfigError(f"--out {out}: predict writes a Parquet table; name the file *.parquet")
    for flag, value in (("--window-sec", window_sec), ("--stride-sec", stride_sec)):
        if value is not None and not value > 0:  # NaN too
            raise ConfigError(f"{flag} must be > 0 seconds, got {value}")
    if stride_sec is not None and window_sec is None:
        raise ConfigError("--stride-sec needs --window-sec (the length of each window)")
    for flag, value in (("--workers", workers), ("--top-k", top_k)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if batch_size < 0:
        raise ConfigError(f"--batch-size must be at least 1 (0 = data.eval_batch_size), got {batch_size}")


def check_complete(written: int, inputs: int, windowed: bool) -> None:
    """Every input clip has its row (at least one, one per window, with --window-sec; a video that cannot be
    decoded has its error row): a table with rows missing is not written."""
    if written < inputs or (written != inputs and not windowed):
        raise RuntimeError(f"predict got {written} row(s) back for {inputs} input clip(s)"
                           f"{' (one or more windows each)' if windowed else ''}: rows were lost on the way, "
                           f"the table was not written")


def run_predict(source: str, inputs: list[str], out: str, top_k: int | None = None, window_sec: float | None = None,
                stride_sec: float | None = None, workers: int = 1, classes_file: str | None = None,
                backbone_checkpoint: str | None = None, split: str | None = None, batch_size: int = 0) -> dict:
    """``top_k``: classes per row (None: up to 5); ``window_sec``/``stride_sec``: None = one row per input."""
    import ray

    from pipelines.data.decoder_pool import pool_limit
    from pipelines.runtime.driver_stderr import quiet_driver_lines
    from pipelines.runtime.ray_compat import small_blocks
    from pipelines.run.in_process import scores_here
    from pipelines.runtime.ray_env import ensure_ray, log_level, on_loopback, use_gpu
    from pipelines.infer.zeroshot import read_class_names

    # 1) options and inputs, checked before Ray starts
    check_options(out, top_k, window_sec, stride_sec, workers, batch_size)
    split = check_split(split)
    from pipelines.cli.args import guard_output

    # predict replaces its own earlier table, never one of its inputs (e.g. a manifest given as INPUT)
    guard_output(out, "--out", [("RUN_DIR", source)] + [("INPUT", i) for i in inputs], overwrite=True)
    refuse_manifest_out(out)
    window_sec, stride_sec = window_sec or 0.0, stride_sec or 0.0
    quiet = log_level() == "quiet"
    trained = load_trained(source, backbone_checkpoint)
    if dataset_heads(trained.cfg.model):
        raise ConfigError(f"{source}: a multi-dataset run (model.heads) has one head per dataset; predict scores "
                          f"single-head runs only")
    check_open_vocabulary(trained, bool(classes_file), source)
    classes = read_class_names(classes_file) if classes_file else None
    names = classes or trained.output_names
    if top_k is None:
        top_k = min(5, len(names))
    elif top_k > len(names) and trained.has_classes:
        if not quiet:
            print(f"[vidpeft] --top-k {top_k}: the model scores {len(names)} classes; each row lists all "
                  f"{len(names)}", flush=True)
        top_k = len(names)
    rows = expand_inputs(inputs, trained, split)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    # 2) Ray Data: decoder actors -> model actors
    ensure_ray(trained.cfg.scaling.ray_address)
    cfg = trained.cfg
    gpu = use_gpu(cfg.scaling.use_gpu)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # progress is printed below, per clip written
    per_block = 1 if window_sec else max(cfg.data.decode_batch_size, 1)
    modalities = {m.name: (m.column, m.dim) for m in cfg.model.modalities}
    # One table in, cut into blocks of per_block rows as it streams (one 0-CPU task at a time): from_arrow over
    # a list of small tables started one metadata task per block, a burst of new worker processes. (Their dumps,
    # "Mutex corrupt", SIGABRT, came from Ray stopping them once idle: ray_compat.keep_idle_workers.)
    ds = small_blocks(ray.data.from_arrow(rows), per_block, cpus=0.0).map_batches(
        PredictDecoder, fn_constructor_kwargs={"settings": eval_settings(cfg), "modalities": modalities,
                                               "window_sec": window_sec, "stride_sec": stride_sec},
        batch_size=per_block, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool_limit(cfg.data.decode_actors,
                                                                                       cfg.data.decode_cpus)),
        num_cpus=cfg.data.decode_cpus, batch_format="numpy")
    scorer = {"trained": trained, "classes": classes, "top_k": top_k, "threads": cfg.scaling.torch_threads}
    batch_size = batch_size or cfg.data.eval_batch_size
    here = scores_here(cfg.scaling, workers, on_loopback(), gpu)
    if here:  # the model in this process: decoded batches come here and are scored as they arrive
        scored = scored_here(ds, scorer, batch_size, cfg.scaling.cpus_per_worker)
    else:
        scored = ds.map_batches(ModelActor, fn_constructor_kwargs=scorer, batch_size=batch_size,
                                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cfg.scaling.cpus_per_worker,
                                num_gpus=1 if gpu else 0, batch_format="numpy"
                                ).iter_batches(batch_size=None, batch_format="pyarrow")

    # 3) stream into one Parquet file
    if not quiet:
        where = "in this process" if here else f"on {workers} model worker(s)"
        print(f"[vidpeft] predicting {rows.num_rows} input clip(s) with {source} {where}"
              f"{' (GPU)' if gpu else ''}", flush=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    done = failed = 0
    shown: list[pa.Table] = []
    last = time.monotonic()
    # the driver executes the dataset: its core worker creates the actor pools (Ray's false alarm about them off)
    with quiet_driver_lines(), pq.ParquetWriter(tmp, SCHEMA) as writer:
        for batch in scored:
            batch = batch.select(SCHEMA.names).cast(SCHEMA)
            writer.write_table(batch)
            done += batch.num_rows
            failed += batch.num_rows - batch["error"].null_count
            if rows.num_rows <= SHOW_TABLE_UP_TO:
                shown.append(batch)
            if time.monotonic() - last > 10 and not quiet:
                print(f"[vidpeft] predicted {done} row(s) of {rows.num_rows} input clip(s), {failed} failed", flush=True)
                last = time.monotonic()
    try:
        check_complete(done, rows.num_rows, bool(window_sec))
    except RuntimeError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_path)
    if shown:
        show_table(pa.concat_tables(shown).sort_by([("video_path", "ascending"), ("start_sec", "ascending")]))
    print(f"[vidpeft] wrote {done} prediction row(s) to {out_path}" +
          (f" ({failed} could not be decoded: see their error column)" if failed else ""), flush=True)
    return {"rows": done, "failed": failed, "out": str(out_path)}


def refuse_manifest_out(out) -> None:
    """predict replaces an earlier table of its own at ``out``, but never a manifest (one whose schema holds
    vidpeft's manifest metadata): that would lose a dataset's annotations."""
    from components.data.manifest import METADATA_KEY

    path = Path(out)
    if not path.is_file():
        return
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return  # not Parquet: nothing of vidpeft's to lose beyond what --out always replaced
    if METADATA_KEY in meta:
        raise ConfigError(f"--out {out}: is a vidpeft manifest, not an earlier prediction table; write to another file")
