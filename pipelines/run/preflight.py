"""Checks on the driver before Ray starts, so a bad model config or weights file is one line, not a
Ray traceback repeated per worker.

The model is built once on the meta device (shapes only: no memory, no compute), weights file included.
When that fails, it is built again without the file: an architecture error (layer index out of range,
unknown family or site, a refused kwarg) is named as such, and otherwise the fault is the weights
file's, named by ``model.backbone.checkpoint`` and the file's path (wrong or truncated file, missing
keys, wrong shapes). A ``--resume`` checkpoint's weights are checked against this config
the same way, before anything in OUTPUT_DIR is rewritten.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from components.config import ConfigError, to_dict
from components.param_counts import oversize_note
from components.weights.reader import weights_present

# What building a model from a bad config or file raises (libraries are not consistent about it).
BUILD_ERRORS = (ValueError, TypeError, RuntimeError, KeyError, IndexError, AssertionError, OSError,
                NotImplementedError, AttributeError)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def build_on_meta(model_cfg, num_outputs: int, class_names: list[str] | None):
    """The model with every parameter on the meta device; a model kind that computes data while it is
    built (M2-CLIP tokenises its class prompts) is built on the CPU instead."""
    from components.model import build_model

    # shapes only: open_clip's "initialized randomly" warning says nothing about the run's weights
    quiet = model_cfg.backbone.family == "openclip_vit"
    if quiet:
        from components.backbones.openclip_vit import quiet_random_init_warning
    with quiet_random_init_warning(True) if quiet else contextlib.nullcontext():
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")  # no-op loads
                return build_model(model_cfg, num_outputs, class_names)
        except NotImplementedError as e:
            if "meta" not in str(e):
                raise
        return build_model(model_cfg, num_outputs, class_names)


def check_model(cfg, class_names: list[str] | None = None, num_outputs: int | None = None):
    """Build ``cfg.model`` on the meta device and return it; errors become one ConfigError naming the key.

    One build when all is well. Only when it fails with a weights file named is the model built again
    without the file, to tell an architecture error from the file's own."""
    model_cfg = cfg.model
    num_outputs = num_outputs or model_cfg.head.num_outputs
    key, path = "model.backbone", model_cfg.backbone.checkpoint
    if path and not weights_present(path, key_hint=f"{key}.checkpoint"):  # a file or an object store URI
        raise ConfigError(f"{key}.checkpoint: weights file not found: {path}")
    try:
        model = build_on_meta(model_cfg, num_outputs, class_names)
    except Exception as e:
        if not path:
            _raise_architecture_error(model_cfg, e)
        bare = replace(model_cfg, backbone=replace(model_cfg.backbone, checkpoint=None))
        try:
            build_on_meta(bare, num_outputs, class_names)
        except Exception as arch:
            _raise_architecture_error(model_cfg, arch)
        # the architecture builds without the file: whatever failed is the file's
        text = _one_line(e).removeprefix(f"{key}.checkpoint: ")  # the weights reader names the key too
        where = "" if str(path) in text else f"{path}: "
        raise ConfigError(f"{key}.checkpoint: {where}{text}") from None
    note = oversize_note(model)  # adapters larger than the backbone they adapt: said once, before Ray
    if note:
        print(f"[vidpeft] note: {note}", flush=True)
    return model


def _raise_architecture_error(model_cfg, e: BaseException):
    if isinstance(e, ConfigError):
        raise e
    if isinstance(e, FileNotFoundError):
        raise ConfigError(f"model: {_one_line(e)}") from None
    if isinstance(e, BUILD_ERRORS):
        raise ConfigError(f"model ({model_cfg.kind}, backbone {model_cfg.backbone.family} "
                          f"{model_cfg.backbone.name}): {_one_line(e)}") from None
    raise e


def check_resume(cfg, class_names: list[str] | None, checkpoint_dir: str, model=None) -> None:
    """A local checkpoint's trainable weights fit this config: same model config, and the tensors this
    model trains are all in the file at the same shapes (read from the header; no data is loaded).
    ``model``: the meta model ``check_model`` built (built here when not given)."""
    from safetensors import safe_open

    from components.checkpoint import config_differences, read_weights_config, unbuilt_keys
    from pipelines.run.checkpoints import WEIGHTS

    weights = Path(checkpoint_dir) / WEIGHTS
    if "://" in str(checkpoint_dir) or not weights.is_file():
        return  # remote storage: the workers check it after download
    refuse = "--resume: the checkpoint {} does not fit this config ({}); use the run's own config or another output_dir"
    try:
        diffs = config_differences(read_weights_config(weights), to_dict(cfg.model), ignore=("backbone.checkpoint",))
        with safe_open(str(weights), framework="pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # a truncated or foreign file
        raise ConfigError(refuse.format(weights, _one_line(e))) from None
    if diffs:
        raise ConfigError(refuse.format(weights, "; ".join(diffs[:5])))
    model = model if model is not None else build_on_meta(cfg.model, cfg.model.head.num_outputs, class_names)
    stale = sorted(set(saved) & unbuilt_keys(model))
    if stale:  # weights load (skipped), but the saved optimizer state has their slots
        raise ConfigError(f"--resume: the checkpoint {weights} holds {len(stale)} tensor(s) of parts this version "
                          f"does not build because they cannot train (e.g. {stale[:2]}), so its optimizer state "
                          f"does not fit; evaluate or predict with the run as it is, or start a new run with init_from")
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()
           if k in trains or ".adapters." in k or k.startswith("head.")}
    missing = sorted(set(own) - set(saved))
    shapes = sorted(k for k in own if k in saved and saved[k] != own[k])
    if missing or shapes:
        what = (f"missing {missing[:3]}" if missing else "") + (f" shapes differ: {shapes[:3]}" if shapes else "")
        raise ConfigError(refuse.format(weights, what.strip()))
