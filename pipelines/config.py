"""The experiment config: everything one `vidpeft train` run needs, layered and validated."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from components.config import cfg, load_yaml
from components.model import ModelConfig
from components.model_config import drop_other_kinds
from components.multihead.config import NAME_PATTERN
from components.tasks import TASKS
from pipelines.config_checks import check_data_regularisers, check_optim_regularisers, check_regularisers

SAMPLINGS = ("segment", "uniform", "strided", "fps")


@dataclass
class DatasetEntry:
    """One dataset of a multi-dataset run (``data.datasets``; pipelines/data/multi_dataset.py)."""

    name: str = cfg("", "dataset name: its head and its metrics (val_<name>_top1, skipped_clips_<name>); "
                        "letters, digits, _ and -")
    manifest: str = cfg("", "this dataset's clip manifest (Parquet): a path or an s3://, gs://, https:// URI")
    task: str = cfg("single_label", "this dataset's head and loss: single_label, multi_label or regression")
    num_outputs: int = cfg(0, "classes / targets of its head; 0 = from the manifest")
    weight: float = cfg(1.0, "mixing ratio: its share of every training epoch is weight / sum of weights")
    train_split: str = cfg("", "split trained on; empty = data.train_split")
    val_split: str = cfg("", "split evaluated; empty = data.val_split, none = this dataset is not evaluated")

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"name must be letters, digits, _ or -, got {self.name!r}")
        if not self.manifest:
            raise ValueError("manifest: no manifest given")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {tuple(TASKS)}, got {self.task!r}")
        if self.num_outputs < 0:
            raise ValueError(f"num_outputs must be >= 0, got {self.num_outputs}")
        if not self.weight > 0:
            raise ValueError(f"weight must be positive, got {self.weight}")


@dataclass
class DataConfig:
    manifest: str = cfg("", "clip manifest (Parquet): a path (relative to the working directory) or an s3://, "
                            "gs://, https:// URI; relative video paths in it resolve against its folder")
    datasets: list[DatasetEntry] = cfg([], "several manifests in one run, one head each, mixed by weight "
                                           "(instead of data.manifest; README: Several datasets in one run)")
    mix_epoch_clips: int = cfg(0, "with data.datasets: training clips per epoch drawn from them by weight; "
                                  "0 = their training clips' total")
    train_split: str = cfg("train", "manifest split used for training")
    val_split: str = cfg("val", "manifest split evaluated after every epoch (empty = none)")
    batch_size: int = cfg(8, "clips per training batch on each worker")
    eval_batch_size: int = cfg(16, "clips per evaluation batch on each worker")
    train_sampling: str = cfg("segment", "frame sampling for training: segment (TSN), uniform, strided, "
                                         "or fps (frames at data.target_fps)")
    eval_sampling: str = cfg("uniform", "frame sampling for evaluation")
    frame_stride: int = cfg(2, "frame step for strided sampling")
    target_fps: float = cfg(0.0, "frame rate of the sampled frames for fps sampling (same seconds per clip "
                                 "whatever the video's rate)")
    augment: bool = cfg(False, "training clips: decode at img_size * decode_scale, random resized crop "
                               "(+ flip, colour jitter); evaluation clips: centre crop of the same decode")
    decode_scale: float = cfg(1.15, "with augment: decode side / crop side")
    crop_scale: list[float] = cfg([0.5, 1.0], "with augment: range of the crop's share of the frame area")
    flip: bool = cfg(True, "with augment: random horizontal flip (off for direction-sensitive "
                           "labels, e.g. Something-Something)")
    color_jitter: float = cfg(0.0, "with augment: brightness/contrast/saturation jitter strength (0 = off)")
    rand_augment: str = cfg("", "with augment: timm RandAugment config, e.g. rand-m9-n2-mstd0.5 (magnitude 9, "
                                "2 ops, magnitude noise 0.5); one op sequence per clip, the same on every "
                                "frame; empty = off (docs/regularisers.md)")
    mixup_alpha: float = cfg(0.0, "training batches: mixup with lambda ~ Beta(a, a), one lambda for all frames "
                                  "of a clip; 0 = off (single_label / multi_label heads)")
    cutmix_alpha: float = cfg(0.0, "training batches: cutmix with lambda ~ Beta(a, a), one box for all frames "
                                   "of a clip; 0 = off")
    mix_prob: float = cfg(1.0, "with mixup/cutmix: probability that a batch (or pair, or clip: mix_mode) is mixed")
    mix_switch_prob: float = cfg(0.5, "with both mixup and cutmix: probability of cutmix instead of mixup")
    mix_mode: str = cfg("batch", "with mixup/cutmix: one lambda per batch, pair or elem (clip), as timm's Mixup")
    decoder: str = cfg("decord", "video decoder: decord (fastest on short clips) or pyav (maintained, FFmpeg 7: "
                                 "reads AV1, cheaper on long videos); README: Choosing a decoder")
    decoder_fallback: str = cfg("pyav", "decoder tried on a file data.decoder cannot read, before its clip is "
                                        "skipped (counted as fallback_clips); empty or the same as data.decoder = none")
    decode_actors: int | Literal["auto"] = cfg(1, "maximum decoder actors (each decodes whole clips with "
                                                  "data.decoder); auto: sized from the measured decode cost per "
                                                  "clip and data.auto_step_seconds (pipelines/data/decoder_pool.py)")
    auto_step_seconds: float = cfg(0.0, "decode_actors auto: seconds of one worker's training step on one batch on "
                                        "its device (the GPU suite's end-to-end step_s); 0 = unknown: every CPU the workers leave free")
    decode_cpus: float = cfg(0.5, "CPUs reserved per decoder actor; keep some CPU free of train workers")
    decode_batch_size: int = cfg(4, "clips per decoder call")
    shuffle_buffer: int = cfg(0, "extra local shuffle buffer (clips) on each worker over the training stream; "
                                 "every epoch is already a fresh seeded permutation of the whole split, so 0 "
                                 "(no buffer) keeps each epoch's clips exactly that epoch's")
    limit: int = cfg(0, "use at most this many clips per split (0 = all); for smoke runs")
    check_files: bool = cfg(True, "check that every video file exists when the manifest is loaded (one LIST "
                                  "per bucket prefix for videos in object storage)")
    cache_dir: str = cfg("auto", "a folder on each node's local disk that keeps the bytes of remote videos and "
                                 "shards (s3://, gs://, https://) so later epochs fetch nothing they have; 'auto' "
                                 "= a folder in each node's temp dir, made at the first remote read and bounded "
                                 "by a quarter of that disk's free space too; 'off' = no cache "
                                 "(docs/cluster_data.md)")
    cache_max_gb: float = cfg(50.0, "size bound of data.cache_dir per node; the least recently used go first")
    eval_clips: int = cfg(1, "evaluation: temporal clips per video, spread over its range; scores are "
                             "averaged over clips x crops views (softmax/sigmoid) before the metrics")
    eval_crops: int = cfg(1, "evaluation: spatial img_size crops per clip, spread along a decode of "
                             "img_size * decode_scale (> 1 needs decode_scale > 1)")
    eval_max_views: int = cfg(0, "evaluation: most views (clips x crops, over a batch's videos) given to the "
                                 "model at once; a batch with more runs in chunks of this size, same scores "
                                 "(MMAction2's max_testing_views); 0 = the whole batch at once")

    def __post_init__(self) -> None:
        from components.video.decoders import decoder_names

        for key in ("decoder", "decoder_fallback"):
            value = getattr(self, key)
            if value not in decoder_names() and not (key == "decoder_fallback" and value == ""):
                raise ValueError(f"{key} must be one of {', '.join(decoder_names())}, got {value!r}")
        for key in ("train_sampling", "eval_sampling"):
            if getattr(self, key) not in SAMPLINGS:
                raise ValueError(f"{key} must be one of {SAMPLINGS}, got {getattr(self, key)!r}")
        for key in ("batch_size", "eval_batch_size", "decode_actors", "decode_batch_size", "frame_stride"):
            if getattr(self, key) != "auto" and getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.auto_step_seconds < 0:
            raise ValueError(f"auto_step_seconds must be 0 (unknown) or positive, got {self.auto_step_seconds}")
        if self.decode_cpus <= 0:
            raise ValueError("decode_cpus must be positive (0 CPUs would oversubscribe the machine)")
        if "fps" in (self.train_sampling, self.eval_sampling) and self.target_fps <= 0:
            raise ValueError("fps sampling needs target_fps > 0")
        lo_hi = self.crop_scale
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
            raise ValueError(f"crop_scale must be [lo, hi] with 0 < lo <= hi <= 1, got {lo_hi}")
        if self.decode_scale < 1:
            raise ValueError(f"decode_scale must be >= 1, got {self.decode_scale}")
        for key in ("eval_clips", "eval_crops"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.eval_max_views < 0:
            raise ValueError(f"eval_max_views must be >= 0 (0 = no chunks), got {self.eval_max_views}")
        if self.eval_crops > 1 and self.decode_scale <= 1:
            raise ValueError(f"eval_crops={self.eval_crops} needs decode_scale > 1 (crops of a larger decode)")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")
        check_data_regularisers(self)
        names = [d.name for d in self.datasets]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"datasets.{i}.name: {name!r} is already the name of datasets.{names.index(name)}")
        if self.datasets and self.manifest:
            raise ValueError("set manifest or datasets, not both (each of data.datasets names its manifest)")
        if self.cache_dir and not self.cache_max_gb > 0:
            raise ValueError(f"cache_max_gb must be positive, got {self.cache_max_gb}")
        if "://" in self.cache_dir:
            raise ValueError(f"cache_dir must be a local folder (on each node), got {self.cache_dir!r}")
        if self.mix_epoch_clips < 0:
            raise ValueError(f"mix_epoch_clips must be >= 0, got {self.mix_epoch_clips}")


@dataclass
class OptimConfig:
    epochs: int = cfg(5, "training epochs")
    lr: float = cfg(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = cfg(0.05, "AdamW weight decay")
    no_decay: bool = cfg(False, "no weight decay on biases, norms, gates, scales (every parameter of 1 or 0 "
                                "dimensions) and on prefix/position/class embeddings (components/engine/optim.py)")
    lr_base_batch: int = cfg(0, "lr is per this global batch: the run uses lr x (batch_size x accumulate x "
                                "workers) / lr_base_batch (M2-CLIP's code: per 256); 0 = lr as given")
    warmup_epochs: int = cfg(0, "warm-up epochs (stepped per optimizer step) before the cosine decay")
    min_lr_ratio: float = cfg(0.01, "first warm-up and final learning rate as a fraction of lr (0 < r <= 1)")
    accumulate: int = cfg(1, "micro-batches whose gradients are summed per optimizer step (effective batch = "
                             "batch_size x accumulate x workers); DDP all-reduces on the last one only")
    grad_clip: float = cfg(1.0, "max gradient norm (0 = no clipping)")
    amp: str = cfg("auto", "mixed precision: auto (bf16 on CUDA with support), bf16, fp16 (with a gradient "
                           "scaler, checkpointed), off")
    patience: int = cfg(0, "stop when checkpoint.metric has not improved for this many epochs (0 = never)")
    label_smoothing: float = cfg(0.0, "single_label heads: cross-entropy against (1 - e) one-hot + e / K; "
                                      "combines with mixup/cutmix; 0 = off")
    drop_path: float = cfg(0.0, "stochastic depth on the backbone's blocks (frozen ones too), rising linearly "
                                "to this rate at the last block, one draw per clip; training only; 0 = off "
                                "(Video Swin variants then keep torchvision's own 0.1)")
    ema_decay: float = cfg(0.0, "keep an EMA of the trainable weights (e.g. 0.9998); validation, checkpoints' "
                                "weights and exports use it, resume continues it; 0 = off")
    ema_warmup: bool = cfg(True, "with ema_decay: timm's EMA warm-up, decay 1 - (1 + step)^-3/4 up to ema_decay")
    layer_decay: float = cfg(1.0, "layer-wise LR decay (full fine-tuning): block i of L trains at lr x "
                                  "layer_decay^(L - i), the stem at layer_decay^(L + 1); 1 = off")
    collapse_patience: int = cfg(3, "training health: evaluations in a row with one predicted class (or the "
                                    "train loss flat at ln C) before the run counts as collapsed")
    stop_on_collapse: bool = cfg(False, "end the run when it has collapsed or a loss/metric is non-finite "
                                        "(it is always said, and tagged vidpeft.health in MLflow)")

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if not self.lr > 0 or math.isinf(self.lr):  # `not >` also refuses nan
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.collapse_patience < 1:
            raise ValueError(f"collapse_patience must be >= 1, got {self.collapse_patience}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.accumulate}")
        if not 0 < self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in (0, 1], got {self.min_lr_ratio}")
        if self.lr_base_batch < 0:
            raise ValueError(f"lr_base_batch must be >= 0, got {self.lr_base_batch}")
        check_optim_regularisers(self)


CLUSTER_MAX_FAILURES = 3  # scaling.max_failures=auto on a cluster


@dataclass
class ScalingConfig:
    num_workers: int = cfg(1, "Ray Train workers (data-parallel)")
    use_gpu: bool | str = cfg("auto", "auto (if the cluster has GPUs), true or false")
    cpus_per_worker: float = cfg(1.0, "CPUs each Train worker reserves")
    torch_threads: int = cfg(0, "intra-op threads per worker; 0 = Ray's default (= cpus_per_worker)")
    host_mmap_mib: Literal["auto"] | float = cfg(
        "auto", "CPU training: glibc malloc maps blocks of at least this many MiB on their own and returns them "
                "when freed (peak RSS then follows live memory; costs page faults). auto = 4 with "
                "model.grad_checkpointing on CPU, else glibc's default; 0 = glibc's default")
    ray_address: str = cfg("", "Ray cluster to join (ray://... or auto); empty = RAY_ADDRESS or a local instance")
    storage_path: str = cfg("", "where Ray keeps checkpoints (shared storage on clusters); empty = OUTPUT_DIR/ray")
    max_failures: Literal["auto"] | int = cfg(
        "auto", "times a run restarts its lost workers from the last checkpoint (-1 = always); auto = "
                f"{CLUSTER_MAX_FAILURES} on a cluster (a preempted node, a killed worker), 0 on a local instance (a "
                "crash there is a bug that a restart would repeat)")
    in_process: Literal["auto"] | bool = cfg(
        "auto", "train in the driver's own process instead of a Ray Train worker (Ray Data still decodes in its "
                "actors): about 10 s less start-up per run, no worker restarts. auto = when it can: one worker, a "
                "local instance, scaling.max_failures 0 (a search's trial then trains in its own process, holding the "
                "worker's CPUs); true = say why when it cannot (pipelines/run/in_process.py)")
    keep_checkpoints: int = cfg(0, "older name of checkpoint.keep, still read from saved configs (0 = unset)")

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        if self.in_process not in ("auto", True, False):
            raise ValueError(f"in_process must be auto, true or false, got {self.in_process!r}")
        if self.in_process is True and self.num_workers != 1:
            raise ValueError(f"in_process trains in this one process: num_workers must be 1, got {self.num_workers}")
        if self.host_mmap_mib != "auto" and self.host_mmap_mib < 0:
            raise ValueError(f"host_mmap_mib must be auto or >= 0, got {self.host_mmap_mib}")
        if isinstance(self.use_gpu, str):  # "true"/"false" strings from older configs are accepted too
            if self.use_gpu not in ("auto", "true", "false"):
                raise ValueError(f"use_gpu must be auto, true or false, got {self.use_gpu!r}")
            if self.use_gpu != "auto":
                self.use_gpu = self.use_gpu == "true"
        if self.max_failures != "auto" and self.max_failures < -1:
            raise ValueError(f"max_failures must be auto, -1 (always) or >= 0, got {self.max_failures}")

    def failures_allowed(self, on_cluster: bool) -> int:
        """The FailureConfig(max_failures) of a run: ``auto`` resolved by where it runs."""
        if self.max_failures == "auto":
            return CLUSTER_MAX_FAILURES if on_cluster else 0
        return self.max_failures


@dataclass
class CheckpointConfig:
    metric: str = cfg("", "metric ranking checkpoints, e.g. val_top1; empty = the task's primary validation "
                          "metric (val_top1, val_mAP, val_mse; several datasets: val_loss); no val split = latest")
    mode: str = cfg("auto", "max or min; auto = min for losses and MSE, max otherwise")
    keep: int = cfg(2, "checkpoints Ray keeps: the best `keep` by the metric, plus always the latest (for resume)")
    every_steps: int = cfg(0, "also checkpoint mid-epoch every N optimizer steps, with the data stream's position: a "
                              "restart or --resume goes on with the epoch's clips not yet trained (0 = epoch ends only)")
    every_minutes: float = cfg(0.0, "also checkpoint mid-epoch when this many minutes passed since the last checkpoint "
                                    "(preemptible workers; 0 = off); with every_steps, whichever comes first")

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "max", "min"):
            raise ValueError(f"mode must be auto, max or min, got {self.mode!r}")
        if self.keep < 1:
            raise ValueError(f"keep must be at least 1, got {self.keep}")
        if self.every_steps < 0 or self.every_minutes < 0:
            raise ValueError(f"every_steps and every_minutes must be >= 0, got {self.every_steps}, {self.every_minutes}")


@dataclass
class TrackingConfig:
    tracking_uri: str = cfg("", "MLflow tracking URI; empty = MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db")
    experiment: str = cfg("vidpeft", "MLflow experiment name")
    run_name: str = cfg("", "MLflow run name; empty = the experiment config's name")
    enabled: bool = cfg(True, "log to MLflow at all")
    parent_run_id: str = cfg("", "MLflow run to nest this run under (set by `vidpeft tune`/`ablate` for their trials)")
    tags: dict[str, str] = cfg({}, "extra MLflow tags on the run (tune/ablate mark trials and cells with them)")


@dataclass
class LogConfig:
    level: str = cfg("info", "quiet (errors and the final table only), info (progress and epoch lines), verbose "
                             "(also Ray's start-up and Ray Data's per-dataset messages); --quiet / --verbose set it")
    progress_steps: int = cfg(0, "a progress line every N batches inside an epoch (0 = by time only)")
    progress_seconds: float = cfg(30.0, "a progress line at least every S seconds inside an epoch (0 = by steps only)")
    metrics_steps: int = cfg(0, "log training loss, lr and clips/s to MLflow every N optimizer steps (0 = per epoch only)")
    system_metrics: bool = cfg(True, "MLflow system metrics for the run: CPU, memory, disk, network, GPU when present")
    system_metrics_seconds: float = cfg(10.0, "seconds between system metrics samples")

    def __post_init__(self) -> None:
        if self.level not in ("quiet", "info", "verbose"):
            raise ValueError(f"level must be quiet, info or verbose, got {self.level!r}")
        if self.progress_steps < 0 or self.progress_seconds < 0 or self.metrics_steps < 0:
            raise ValueError("progress_steps, progress_seconds and metrics_steps must be >= 0")
        if self.system_metrics_seconds <= 0:
            raise ValueError(f"system_metrics_seconds must be > 0, got {self.system_metrics_seconds}")


@dataclass
class ZeroShotConfig:
    manifest: str = cfg("", "after training, zero-shot evaluation on this manifest's held-out label set "
                            "(model.kind m2clip; empty = none); metrics zeroshot_top1/top5")
    classes: str = cfg("", "class names file, one per line in label order; empty = the manifest's class_names")
    split: str = cfg("test", "manifest split evaluated")
    templates: list[str] = cfg([], "prompt templates with one {} (averaged); empty = model.m2clip.eval_templates")


@dataclass
class ExperimentConfig:
    name: str = cfg("run", "run name (also the default output directory name)")
    output_dir: str = cfg("", "where the run writes config, checkpoints and metrics.json; empty = runs/<name>")
    seed: int = cfg(0, "seed for model init, sampling and shuffling")
    data: DataConfig = cfg(factory=DataConfig, help="data pipeline")
    model: ModelConfig = cfg(factory=ModelConfig, help="backbone, adapters, head")
    optim: OptimConfig = cfg(factory=OptimConfig, help="optimisation")
    scaling: ScalingConfig = cfg(factory=ScalingConfig, help="Ray resources")
    checkpoint: CheckpointConfig = cfg(factory=CheckpointConfig, help="which checkpoint is the run's result")
    tracking: TrackingConfig = cfg(factory=TrackingConfig, help="MLflow")
    log: LogConfig = cfg(factory=LogConfig, help="console output and per-step / system metrics")
    zeroshot: ZeroShotConfig = cfg(factory=ZeroShotConfig, help="zero-shot evaluation closing the run "
                                                                "(pipelines/infer/zeroshot_close.py)")

    def __post_init__(self) -> None:
        check_regularisers(self)


def saved_config(data: dict, where: str) -> dict:
    """A run's config read back (config.yaml, an export's metadata) as today's config takes it: runs
    saved before configs were per model kind hold every kind's sections (``drop_other_kinds``)."""
    if isinstance(data.get("model"), dict):
        data = {**data, "model": drop_other_kinds(data["model"], where)}
    return data


def load_saved_config(path) -> dict:
    """A run directory's config.yaml as plain data, through ``saved_config``."""
    return saved_config(load_yaml(path), str(path))
