"""Run directories of tiny random models, as `vidpeft train` leaves them, without training.

For the export / serve tests and the serving benchmark: what is measured there (merge equivalence,
ONNX agreement, request latency) does not depend on trained weights, so every trainable tensor (LoRA's
B included) is drawn at random, which makes a wrong merge or a wrong load visible.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 4}
TINY_VIT = {"family": "timm_vit", "name": "vit_tiny_patch16_224", "img_size": 32, "num_frames": 4,
            "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}
LORA = {"type": "lora", "sites": ["attn", "mlp"], "rank": 4, "alpha": 8}
CLASSES = ["running", "jumping", "swimming"]  # one BPE token each (M2-CLIP prompts)


def write_run(root: Path, backbone: dict, adapters: list[dict], classes: list[str] = CLASSES,
              overrides: list[str] = (), seed: int = 0) -> Path:
    """``root/run``: config.yaml, labels.json and random trainable weights of a classifier or M2-CLIP model."""
    from components.checkpoint import save_weights, trainable_state_dict
    from components.config import dump_yaml, resolve, to_dict
    from components.model import build_model
    from pipelines.config import ExperimentConfig
    from pipelines.infer.trained import write_labels

    cfg = resolve(ExperimentConfig, [], [f"model.backbone={json.dumps(backbone)}",
                                         f"model.adapters={json.dumps(adapters)}",
                                         f"model.head.num_outputs={len(classes)}", f"seed={seed}", *overrides])
    run = Path(root) / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    write_labels(run, classes, None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # as build_trained seeds: the same random backbone
        model = build_model(cfg.model, len(classes), classes)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    save_weights(run / "weights.safetensors", trainable_state_dict(model), to_dict(cfg.model))
    return run


def m2clip_overrides(text_adapters: list[dict], eval_head: str = "xm") -> list[str]:
    """An M2-CLIP run's own keys: its text adapters and evaluation head (contrastive-only training)."""
    return ["model.kind=m2clip", f"model.m2clip.text_adapters={json.dumps(text_adapters)}",
            "model.m2clip.cmlm=false", f"model.m2clip.vc={'false' if eval_head == 'xm' else 'true'}",
            "model.m2clip.cmc=false", f"model.m2clip.eval_head={eval_head}"]
