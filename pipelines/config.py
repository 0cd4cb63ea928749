"""The experiment config: everything one `vidpeft train` run needs, layered and validated."""

from __future__ import annotations

from dataclasses import dataclass

from components.config import cfg
from components.model import ModelConfig

SAMPLINGS = ("segment", "uniform", "strided")


@dataclass
class DataConfig:
    manifest: str = cfg("", "clip manifest (Parquet); relative paths resolve against the working directory")
    train_split: str = cfg("train", "manifest split used for training")
    val_split: str = cfg("val", "manifest split evaluated after every epoch (empty = none)")
    batch_size: int = cfg(8, "clips per training batch on each worker")
    eval_batch_size: int = cfg(16, "clips per evaluation batch on each worker")
    train_sampling: str = cfg("segment", "frame sampling for training: segment (TSN), uniform or strided")
    eval_sampling: str = cfg("uniform", "frame sampling for evaluation")
    frame_stride: int = cfg(2, "frame step for strided sampling")
    decode_actors: int = cfg(1, "maximum decoder actors (each decodes whole clips with decord)")
    decode_cpus: float = cfg(0.5, "CPUs reserved per decoder actor; keep some CPU free of train workers")
    decode_batch_size: int = cfg(4, "clips per decoder call")
    shuffle_buffer: int = cfg(32, "local shuffle buffer (clips) on each worker; 0 = no shuffle")
    limit: int = cfg(0, "use at most this many clips per split (0 = all); for smoke runs")
    check_files: bool = cfg(True, "check that every video file exists when the manifest is loaded")

    def __post_init__(self) -> None:
        for key in ("train_sampling", "eval_sampling"):
            if getattr(self, key) not in SAMPLINGS:
                raise ValueError(f"{key} must be one of {SAMPLINGS}, got {getattr(self, key)!r}")
        for key in ("batch_size", "eval_batch_size", "decode_actors", "decode_batch_size", "frame_stride"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.decode_cpus <= 0:
            raise ValueError("decode_cpus must be positive (0 CPUs would oversubscribe the machine)")


@dataclass
class OptimConfig:
    epochs: int = cfg(5, "training epochs")
    lr: float = cfg(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = cfg(0.05, "AdamW weight decay")
    warmup_epochs: int = cfg(0, "linear warm-up epochs before the cosine decay")
    min_lr_ratio: float = cfg(0.01, "final learning rate as a fraction of lr")
    grad_clip: float = cfg(1.0, "max gradient norm (0 = no clipping)")
    amp: str = cfg("auto", "mixed precision: auto (bf16 on CUDA with support), bf16, fp16, off")

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")


@dataclass
class ScalingConfig:
    num_workers: int = cfg(1, "Ray Train workers (data-parallel)")
    use_gpu: str = cfg("auto", "auto (if the cluster has GPUs), true or false")
    cpus_per_worker: float = cfg(1.0, "CPUs each Train worker reserves")
    torch_threads: int = cfg(0, "intra-op threads per worker; 0 = Ray's default (= cpus_per_worker)")
    ray_address: str = cfg("", "Ray cluster to join (ray://... or auto); empty = RAY_ADDRESS or a local instance")
    storage_path: str = cfg("", "where Ray keeps checkpoints (shared storage on clusters); empty = OUTPUT_DIR/ray")
    max_failures: int = cfg(0, "times a failed run restarts from its last checkpoint")
    keep_checkpoints: int = cfg(2, "checkpoints kept (the latest ones)")

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        if self.use_gpu not in ("auto", "true", "false"):
            raise ValueError(f"use_gpu must be auto, true or false, got {self.use_gpu!r}")


@dataclass
class TrackingConfig:
    tracking_uri: str = cfg("", "MLflow tracking URI; empty = MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db")
    experiment: str = cfg("vidpeft", "MLflow experiment name")
    run_name: str = cfg("", "MLflow run name; empty = the experiment config's name")
    enabled: bool = cfg(True, "log to MLflow at all")


@dataclass
class ExperimentConfig:
    name: str = cfg("run", "run name (also the default output directory name)")
    output_dir: str = cfg("", "where the run writes config, checkpoints and metrics.json; empty = runs/<name>")
    seed: int = cfg(0, "seed for model init, sampling and shuffling")
    data: DataConfig = cfg(factory=DataConfig, help="data pipeline")
    model: ModelConfig = cfg(factory=ModelConfig, help="backbone, adapters, head")
    optim: OptimConfig = cfg(factory=OptimConfig, help="optimisation")
    scaling: ScalingConfig = cfg(factory=ScalingConfig, help="Ray resources")
    tracking: TrackingConfig = cfg(factory=TrackingConfig, help="MLflow")
