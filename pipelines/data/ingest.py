"""Ray Data ingest: manifest rows -> decoded clips, streamed into Train workers.

The manifest is validated on the driver (errors name row and column) and handed to Ray Data as
Arrow blocks; a pool of decoder actors turns rows into uint8 clips with ``data.decoder`` (decord or
pyav). A file that decoder cannot read is tried with ``data.decoder_fallback`` (``fallback = True``
on its row, counted as fallback_clips). A video that still fails to decode does not stop the epoch:
its row comes out with ``ok = False`` and an all-zero clip, and the training loop drops it from the
batch and counts it, so the count reaches the run's metrics.
With ``augment`` on, training clips are decoded a little larger and randomly cropped/flipped/jittered
on the decoder actors (seeded per run seed, clip and epoch); evaluation clips get the centre crop of the same
decode, so both see objects at the same scale. No decord reader outlives one clip (decord leaks).
The training split is one stream over all epochs (pipelines/data/epoch_stream.py): its rows are
(row, epoch) pairs, which the decoder looks up in the manifest table it holds.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from components.data.packed import PACKED_COLUMNS, ShardReader, is_packed
from components.io import StorageError
from components.io.cache import node_fetch
from components.video.decode import ClipSpec, VideoDecodeError, decode_clip
from components.video.transforms import ClipAugment, center_crop
from components.video.views import decode_views
from pipelines.data import eval_views
from pipelines.data.epoch_stream import EPOCH, ROW, drop_consumed, grouped_epoch_order, stream_table
from pipelines.runtime.phase_log import mark

log = logging.getLogger("vidpeft.ingest")

RANGE_COLUMNS = ("start_frame", "end_frame", "start_sec", "end_sec")
# An int64 column an evaluation may add to its table: passed through the decoder to the batches, so
# per-video scores can be matched to their clips whatever order the decoder actors finish in.
EVAL_ROW = "eval_row"
# Each row's target as the task decodes it, added by the driver (build_dataset): the decoder actors copy it and
# never import the task code (torch, several seconds of a decoder actor's start on 2 cores)
TARGET = "target_decoded"
SPLIT_CPUS = 0.0  # CPUs a task cutting the training stream's index blocks reserves: none (it copies a few ints)


@dataclass(frozen=True)
class ModalityColumn:
    name: str
    column: str
    dim: int
    tokens: int = 1  # > 1: the column holds a (tokens, dim) sequence per clip, flattened


@dataclass(frozen=True)
class DecodeSettings:
    """Everything a decoder actor needs (small and picklable)."""

    num_frames: int
    size: int
    sampling: str
    stride: int
    training: bool
    seed: int
    task: str  # a task kind (components/tasks): it names the target column and decodes it
    num_outputs: int
    modalities: tuple[ModalityColumn, ...] = ()
    target_fps: float = 0.0
    augment: bool = False
    decode_scale: float = 1.15
    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip: bool = True
    color_jitter: float = 0.0
    rand_augment: str = ""  # timm RandAugment config, one op sequence per clip ("" = off)
    datasets: tuple[str, ...] = ()  # non-empty: emit a `dataset_index` column (per-dataset counts)
    eval_clips: int = 1  # evaluation views (pipelines/data/eval_views.py): clips x crops per video
    eval_crops: int = 1
    decoder: str = "decord"  # components/video/decoders
    decoder_fallback: str = ""  # tried when `decoder` cannot read a file; "" = none
    cache_dir: str = "off"  # per-node cache of remote video bytes (components/io/cache.py): a folder, auto, off
    cache_bytes: int = 0
    packed: bool = False  # rows name (shard, member): components/data/packed.py

    @property
    def decode_size(self) -> int:
        return math.ceil(self.size * self.decode_scale) if self.augment else self.size


def decode_settings(cfg, training: bool, datasets: tuple[str, ...] = ()) -> DecodeSettings:
    """DecodeSettings for a split from a prepared ExperimentConfig (num_outputs and modality dims
    filled in by the manifest)."""
    from components.tasks import model_task

    d = cfg.data
    return DecodeSettings(
        num_frames=cfg.model.backbone.num_frames, size=cfg.model.backbone.img_size,
        sampling=d.train_sampling if training else d.eval_sampling, stride=d.frame_stride,
        training=training, seed=cfg.seed, task=model_task(cfg.model).kind,
        num_outputs=cfg.model.head.num_outputs,
        modalities=tuple(ModalityColumn(m.name, m.column, m.dim, max(m.tokens, 1)) for m in cfg.model.modalities),
        target_fps=d.target_fps, augment=d.augment, decode_scale=d.decode_scale,
        crop_scale=(float(d.crop_scale[0]), float(d.crop_scale[1])), flip=d.flip,
        color_jitter=d.color_jitter, rand_augment=d.rand_augment, datasets=tuple(datasets), eval_clips=d.eval_clips, eval_crops=d.eval_crops,
        decoder=d.decoder, decoder_fallback=d.decoder_fallback,
        cache_dir=d.cache_dir, cache_bytes=int(d.cache_max_gb * 1e9))


def _optional(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


class ClipDecoder:
    """Ray Data callable class: a batch of manifest rows -> a batch of numeric training columns."""

    def __init__(self, settings: DecodeSettings, rows: pa.Table | None = None) -> None:
        mark("decoder_actor")
        self.s = settings
        self.rows = rows  # a stream of (row, epoch) pairs: the manifest rows they index
        self.spec = ClipSpec(num_frames=settings.num_frames, size=settings.decode_size,
                             sampling=settings.sampling, stride=settings.stride, target_fps=settings.target_fps)
        self.augment = (ClipAugment(settings.size, settings.crop_scale, flip=settings.flip,
                                    color_jitter=settings.color_jitter, rand_augment=settings.rand_augment)
                        if settings.augment else None)
        self.dataset_index = {name: i for i, name in enumerate(settings.datasets)}
        self.views = eval_views.view_decoding(settings)  # None: one clip per video
        self.task = None  # a batch without the driver's TARGET column (a direct call): the task decodes it
        self.decoders = {"decoder": settings.decoder, "fallback": settings.decoder_fallback or None,
                         "fetch": node_fetch(settings.cache_dir, settings.cache_bytes)}
        # packed rows: the shard's bytes fetched once (or from the node cache), members cut from them
        self.shards = ShardReader(self.decoders["fetch"]) if settings.packed else None
        self.fallback_warned = False
        self.reported: set[str] = set()  # clips whose skip this actor has printed (later epochs: counted only)

    def _on_fallback(self, flags: np.ndarray, i: int, clip_id: str):
        def used(first: VideoDecodeError) -> None:
            flags[i] = True
            # once per actor at warning level (the count reaches the metrics), then per clip at debug
            level = logging.DEBUG if self.fallback_warned else logging.WARNING
            self.fallback_warned = True
            log.log(level, "clip %s: %s cannot read %s (%s); decoded with %s", clip_id, self.s.decoder,
                    first.path, first.reason, self.s.decoder_fallback)
        return used

    def _rng(self, clip_id: str, epoch: int) -> np.random.Generator | None:
        if not self.s.training:
            return None
        # Seeded per (run seed, clip, epoch): reproducible whichever actor decodes it, new every epoch.
        return np.random.default_rng([self.s.seed, zlib.crc32(clip_id.encode()), epoch])

    def _lookup(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(row, epoch) pairs -> the manifest rows they name, as Ray's numpy batch format has them."""
        table = self.rows.take(pa.array(batch[ROW]))
        out = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
        out[EPOCH], out[ROW] = batch[EPOCH], batch[ROW]
        return out

    def _source(self, batch: dict[str, np.ndarray], i: int) -> tuple[str, bytes | None]:
        """(the video's name, its bytes when already at hand): a packed row's member is cut from its shard;
        any other video is read by the decoder call (fetched once if remote)."""
        path = str(batch["video_path"][i])
        if self.shards is None:
            return path, None
        name = f"{path}#{batch['member'][i]}"
        try:
            return name, self.shards.member(path, int(batch["member_offset"][i]), int(batch["member_size"][i]))
        except (StorageError, OSError) as e:
            raise VideoDecodeError(name, getattr(e, "reason", None) or str(e)) from None

    def _targets(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if TARGET in batch:
            return np.stack(list(batch[TARGET]))
        if self.task is None:
            from components.tasks import make_task

            self.task = make_task(self.s.task, self.s.num_outputs)
        return np.stack([self.task.decode(v) for v in batch[self.task.column]])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mark("decode_batch")
        if self.rows is not None:
            batch = self._lookup(batch)
        n = len(batch["clip_id"])
        epochs = batch[EPOCH] if EPOCH in batch else np.zeros(n, dtype=np.int64)
        t, size = self.s.num_frames, self.s.size
        views = (self.views[1].num_views,) if self.views else ()
        videos = np.zeros((n, *views, t, size, size, 3), dtype=np.uint8)  # (n, [V,] T, S, S, 3)
        ok = np.ones(n, dtype=bool)
        fallback = np.zeros(n, dtype=bool)  # decoded by the fallback decoder
        for i in range(n):
            clip_id = str(batch["clip_id"][i])
            ranges = {k: _optional(batch[k][i]) if k in batch else None for k in RANGE_COLUMNS}
            rng = self._rng(clip_id, int(epochs[i]))
            used = self._on_fallback(fallback, i, clip_id)
            try:
                path, data = self._source(batch, i)
                if self.views:
                    videos[i] = decode_views(path, *self.views, **self.decoders, on_fallback=used, data=data,
                                             **ranges)
                    continue
                clip = decode_clip(path, self.spec, rng=rng, **self.decoders, on_fallback=used, data=data, **ranges)
            except VideoDecodeError as e:
                ok[i] = False
                dataset = f" of dataset {batch['dataset'][i]}" if "dataset" in batch else ""
                # once per clip and actor: the decoder lives for the run and meets the clip every epoch
                level = logging.DEBUG if clip_id in self.reported else logging.WARNING
                self.reported.add(clip_id)
                log.log(level, "skipping clip %s%s: %s", clip_id, dataset, e)
                continue
            if self.augment is not None:
                clip = self.augment(clip, rng) if rng is not None else center_crop(clip, size)
            videos[i] = clip
        out = {
            "video": videos,
            "ok": ok,
            "fallback": fallback,
            "target": self._targets(batch),
        }
        if EPOCH in batch:
            out[EPOCH] = np.asarray(batch[EPOCH], dtype=np.int64)
        if ROW in batch:  # the training stream's manifest row: a mid-epoch checkpoint records what was trained
            out[ROW] = np.asarray(batch[ROW], dtype=np.int64)
        if EVAL_ROW in batch:
            out[EVAL_ROW] = np.asarray(batch[EVAL_ROW], dtype=np.int64)
        if self.dataset_index:
            out["dataset_index"] = np.array([self.dataset_index[str(d)] for d in batch["dataset"]],
                                            dtype=np.int64)
        for m in self.s.modalities:
            shape = (m.dim,) if m.tokens <= 1 else (m.tokens, m.dim)  # a sequence: (M, D) per clip
            feats = np.zeros((n, *shape), dtype=np.float32)
            present = np.zeros(n, dtype=bool)
            for i, value in enumerate(batch[m.column]):
                if value is not None:
                    feats[i] = np.asarray(value, dtype=np.float32).reshape(shape)
                    present[i] = True
            out[f"side_{m.name}"] = feats
            out[f"side_{m.name}_mask"] = present
        return out


def decoded_targets(table: pa.Table, settings: DecodeSettings) -> pa.Table:
    """``table`` with its TARGET column: each row's target decoded by the task, as the decoder would."""
    from components.tasks import make_task

    task = make_task(settings.task, settings.num_outputs)
    if table.num_rows == 0 or TARGET in table.column_names:
        return table
    values = [task.decode(v) for v in table[task.column].to_pylist()]
    first = np.asarray(values[0])
    kind = pa.from_numpy_dtype(first.dtype)
    column = pa.array(values, type=kind if first.ndim == 0 else pa.list_(kind))
    return table.append_column(TARGET, column)


def shard_blocks(table: pa.Table, seed: int, epochs: range | None, consumed=None) -> list[pa.Table]:
    """Blocks of a packed split, one per shard: the training stream's (row, epoch) pairs, epoch after
    epoch, shards in a seeded order and rows shuffled within each (without the ``consumed`` pairs); or
    (epochs None) the rows themselves, cut where the shard changes."""
    shards = table["video_path"].to_numpy(zero_copy_only=False)
    if epochs is None:
        cuts = [0, *(np.flatnonzero(shards[1:] != shards[:-1]) + 1).tolist(), table.num_rows]
        return [table.slice(a, b - a) for a, b in zip(cuts, cuts[1:]) if b > a] or [table]
    _, groups = np.unique(shards, return_inverse=True)
    blocks = []
    for e in epochs:
        for rows in grouped_epoch_order(groups, seed, e):
            block = drop_consumed(pa.table({ROW: rows.astype(np.int64), EPOCH: np.full(len(rows), e, dtype=np.int32)}),
                                  consumed)
            if block.num_rows:
                blocks.append(block)
    return blocks or [stream_table(0, seed, range(0))]


def build_dataset(table: pa.Table, settings: DecodeSettings, decode_actors: int | str, decode_cpus: float,
                  decode_batch_size: int, limit: int = 0, epochs: range | None = None, consumed=None):
    """A lazy Ray Dataset of decoded clips for one split (nothing is decoded until iterated).

    ``epochs``: the training stream, every epoch of ``epochs`` in one dataset, each in its own seeded
    order (pipelines/data/epoch_stream.py), without the (row, epoch) pairs in ``consumed`` (trained
    before a mid-epoch checkpoint); None: the split once, in manifest order. ``decode_actors`` auto:
    every free CPU (pipelines/data/decoder_pool.py; training sizes its pool before)."""
    import ray.data

    from pipelines.data.decoder_pool import pool_limit
    # Ray internals: not for the decoder actors to import
    from pipelines.runtime.ray_compat import arrow_dataset, metadata_tasks_take_no_cpu, small_blocks

    mark("data_plan")
    metadata_tasks_take_no_cpu()  # built where every CPU may be held (a Tune trial's controller, evaluate's tasks)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # per-epoch progress comes from the train loop instead
    if limit:
        table = table.slice(0, limit)
    if is_packed(table):  # a packed manifest (`vidpeft pack`): rows name tar shard members
        settings = replace(settings, packed=True)
    from components.tasks import make_task

    keep = ["clip_id", "video_path", make_task(settings.task).column]
    keep += [c for c in RANGE_COLUMNS if c in table.column_names]
    keep += [m.column for m in settings.modalities]
    keep += ["dataset"] if settings.datasets else []
    keep += list(PACKED_COLUMNS[:3]) if settings.packed else []
    keep += [EVAL_ROW] if EVAL_ROW in table.column_names else []
    table = decoded_targets(table.select(keep), settings)
    # Several small blocks, so more than one decoder actor can work at once.
    rows_per_block = max(decode_batch_size * 2, 1)
    constructor = {"settings": settings}
    if settings.packed:  # a block per shard (per epoch): one actor, one fetch of the shard
        ds = arrow_dataset(shard_blocks(table, settings.seed, epochs, consumed))
        constructor["rows"] = table if epochs is not None else None
    elif epochs is not None:
        # One (row, epoch) block per epoch, cut into small blocks as the stream flows (not all at
        # once: a long run over a large manifest would hold millions of them). The decoder actors hold
        # the rows themselves.
        ds = arrow_dataset([drop_consumed(stream_table(table.num_rows, settings.seed, range(e, e + 1)), consumed)
                            for e in epochs])
        ds = small_blocks(ds, rows_per_block, cpus=SPLIT_CPUS)
        constructor["rows"] = table
    else:
        blocks = [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)] or [table]
        ds = arrow_dataset(blocks)  # the tables' metadata read here: no task to wait for
    return ds.map_batches(
        ClipDecoder,
        fn_constructor_kwargs=constructor,
        batch_size=decode_batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool_limit(decode_actors, decode_cpus)),
        num_cpus=decode_cpus,
        batch_format="numpy",
    )
