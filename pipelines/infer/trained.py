"""A trained model, from a run directory or from a standalone export, ready to rebuild.

Two sources give the same `Trained` description:
- a run directory (`vidpeft train` output): config.yaml, weights.safetensors (trainable weights only)
  and labels.json (class / target names); the frozen backbone comes from model.backbone.checkpoint
  (which `backbone_checkpoint` overrides, e.g. when the run moved to another machine);
- a standalone export (`vidpeft export`): one .safetensors file with the whole model (frozen backbone
  + adapters + head) and, in its metadata, the experiment config and the names; it needs no backbone
  checkpoint and no run directory.
Every problem is a one-line error naming the file (FileNotFoundError / ConfigError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from components.config import ConfigError, from_dict, resolve, to_dict
from components.weights.reader import weights_present
from pipelines.config import ExperimentConfig, load_saved_config, saved_config

WEIGHTS = "weights.safetensors"
LABELS = "labels.json"
STANDALONE_KEY = "vidpeft_standalone"  # metadata: JSON {"config": ..., "class_names": ..., "target_names": ...}


@dataclass
class Trained:
    cfg: ExperimentConfig
    class_names: list[str]
    target_names: list[str] = field(default_factory=list)
    weights: Path = Path()
    standalone: bool = False  # weights hold the whole model (an export), not the trainable part only
    run_dir: Path | None = None

    @property
    def task(self) -> str:
        return self.cfg.model.head.task

    @property
    def num_outputs(self) -> int:
        return self.cfg.model.head.num_outputs

    @property
    def has_classes(self) -> bool:
        """Its outputs are named classes (its task kind says; regression's are real-valued targets)."""
        from components.tasks import make_task

        return make_task(self.task).has_classes

    @property
    def output_names(self) -> list[str]:
        """What each output column means: class names, or regression target names."""
        if not self.has_classes:
            return self.target_names or [f"target_{i}" for i in range(self.num_outputs)]
        return self.class_names or [f"class_{i}" for i in range(self.num_outputs)]


def write_labels(out: Path, class_names: list[str], target_names: list[str] | None) -> None:
    """Saved by `vidpeft train` beside config.yaml: what the head's outputs are called."""
    (out / LABELS).write_text(json.dumps({"class_names": list(class_names or []),
                                          "target_names": list(target_names or [])}, indent=2))


def _labels_of_run(run: Path, cfg: ExperimentConfig) -> tuple[list[str], list[str]]:
    if (run / LABELS).is_file():
        data = json.loads((run / LABELS).read_text())
        return list(data.get("class_names") or []), list(data.get("target_names") or [])
    # runs older than labels.json: the training manifest's metadata, when it is still there
    if cfg.data.manifest and Path(cfg.data.manifest).is_file():
        from components.data.manifest import read_manifest

        m = read_manifest(cfg.data.manifest, check_files=False)
        return list(m.class_names or []), list(m.regression_names or [])
    return [], []


def read_standalone_meta(path: Path) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # not a safetensors file at all
        raise ConfigError(f"{path}: not a readable .safetensors file ({type(e).__name__}: {e})") from None
    return json.loads(meta[STANDALONE_KEY]) if STANDALONE_KEY in meta else None


def load_trained(source: str | Path, backbone_checkpoint: str | None = None) -> Trained:
    """Describe the model at ``source`` (run directory or exported .safetensors) without building it."""
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such run directory or exported model file")
    if src.is_file():
        meta = read_standalone_meta(src)
        if meta is None:
            raise ConfigError(f"{src}: not a `vidpeft export` file (no {STANDALONE_KEY} metadata); give the run "
                              f"directory instead")
        cfg = from_dict(ExperimentConfig, saved_config(meta["config"], str(src)))
        t = Trained(cfg, list(meta.get("class_names") or []), list(meta.get("target_names") or []), src,
                    standalone=True)
        return _checked(t, src)
    if not (src / "config.yaml").is_file():
        raise FileNotFoundError(f"{src}: not a vidpeft run directory (no config.yaml)")
    if not (src / WEIGHTS).is_file():
        raise FileNotFoundError(f"{src}: the run has no {WEIGHTS} (it has not finished an epoch; train or "
                                f"resume it first)")
    overrides = [f"model.backbone.checkpoint={backbone_checkpoint}"] if backbone_checkpoint else []
    cfg = resolve(ExperimentConfig, [], overrides, base=load_saved_config(src / "config.yaml"))
    ckpt = cfg.model.backbone.checkpoint
    if ckpt and not weights_present(ckpt):  # a local file or an object in s3://, gs://, https://
        raise FileNotFoundError(f"model.backbone.checkpoint {ckpt} (from {src / 'config.yaml'}) not found: pass "
                                f"--backbone-checkpoint PATH, or use a `vidpeft export` file, which holds the backbone")
    names, targets = _labels_of_run(src, cfg)
    read_standalone_meta(src / WEIGHTS)  # a safetensors file at all (its header), before any worker reads it
    return _checked(Trained(cfg, names, targets, src / WEIGHTS, run_dir=src), src / "config.yaml")


def _checked(t: Trained, config_file: Path) -> Trained:
    """The saved config builds a model (shapes only, on the meta device): a refused kwarg or a bad adapter in a
    handed-over config.yaml is one line naming the file here, on the driver, not a worker's traceback."""
    from pipelines.run.preflight import check_model

    model = t.cfg.model
    bare = replace(model, backbone=replace(model.backbone, checkpoint=None),
                   adapters=[replace(a, init_from="") for a in model.adapters])
    try:
        check_model(replace(t.cfg, model=bare), t.class_names if t.task != "regression" else None)
    except ConfigError as e:
        raise ConfigError(f"{config_file}: {e}") from None
    return t


def build_trained(t: Trained, device="cpu"):
    """The model with its trained weights, in eval mode on ``device``."""
    import torch
    from safetensors.torch import load_file

    from components.checkpoint import load_weights, without_unbuilt
    from components.model import build_model

    model_cfg = t.cfg.model
    if t.standalone:  # every tensor is in the file: build without the backbone checkpoint or init_from files
        model_cfg = replace(model_cfg, backbone=replace(model_cfg.backbone, checkpoint=None),
                            adapters=[replace(a, init_from="") for a in model_cfg.adapters])
    names = t.class_names if t.has_classes else None
    # Seeded as the training loop seeds before building: a random-init backbone (no checkpoint) is then
    # the very one the adapters were trained on.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.cfg.seed)
        model = build_model(model_cfg, t.num_outputs, names or None)
    try:
        if t.standalone:
            state = without_unbuilt(model, load_file(str(t.weights)))
            result = model.load_state_dict(state, strict=False)
            missing = [k for k in result.missing_keys]
            if missing or result.unexpected_keys:
                raise ValueError(f"missing {len(missing)} key(s) e.g. {missing[:3]}, unexpected "
                                 f"{len(result.unexpected_keys)} e.g. {result.unexpected_keys[:3]}")
        else:
            load_weights(model, t.weights, to_dict(t.cfg.model))
    except ValueError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"{t.weights}: does not fit the model of its config: {first}") from None
    return model.to(torch.device(device)).eval()


def check_split(split: str | None) -> str | None:
    """--split as the manifest names it (``validation`` is ``val``, as `prepare` reads it), checked before
    anything is loaded."""
    from components.data.converters.base import SPLIT_WORDS
    from components.data.manifest import SPLITS

    if split is None:
        return None
    name = SPLIT_WORDS.get(split.lower(), split)
    if name not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    return name


def check_classes(t: Trained, manifest_path: str | Path, manifest_names: list[str]) -> None:
    """A manifest scored against this model must name the same classes, in the same order."""
    if not t.has_classes or not manifest_names or not t.class_names:
        return
    if list(manifest_names) != list(t.class_names):
        extra = [n for n in manifest_names if n not in t.class_names][:3]
        lacking = [n for n in t.class_names if n not in manifest_names][:3]
        detail = f"not in the run: {extra}; missing: {lacking}" if (extra or lacking) else "same names, other order"
        raise ConfigError(f"{manifest_path}: its classes differ from the model's ({len(manifest_names)} vs "
                          f"{len(t.class_names)}; {detail})")


def run_tracking(t: Trained) -> tuple[str, str | None]:
    """(tracking URI, the training run's MLflow run id) when that run is still in its store; otherwise the
    URI the config (or MLFLOW_TRACKING_URI) names and None: the caller logs to a new run there."""
    from pipelines.runtime import tracking

    info_file = t.run_dir / "run_info.json" if t.run_dir else None
    info = json.loads(info_file.read_text()) if info_file and info_file.is_file() else {}
    uri, run_id = info.get("tracking_uri"), info.get("run_id")
    if t.run_dir is not None:
        from pipelines.run.run_place import note_moved_run

        note_moved_run(t.run_dir, uri if run_id else None)
    if uri and run_id:
        try:
            tracking.client(uri).get_run(run_id)
            return uri, run_id
        except Exception:  # the store moved or was deleted
            print(f"[vidpeft] MLflow run {run_id} is not in {uri}: logging to a new run", flush=True)
    return tracking.resolve_tracking_uri(t.cfg.tracking.tracking_uri), None
