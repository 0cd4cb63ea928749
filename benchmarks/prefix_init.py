"""What the paper's prefix form (no gate) does to a frozen backbone at initialisation.

With ``zero_init_gate: false`` (CM3T's prefix tuning as written, the presets' default) every query
attends to [prefix; tokens] from step 0, so an adapted model is NOT its frozen backbone at init. This
measures by how much, for the presets' prefix (L = 16, Embedding + Linear-ReLU-Linear, hidden 232):

- ``lambda``: the prefix's share of each query's attention (sum of softmax weights on prefix keys),
  averaged over queries and heads, per block;
- ``feature_rel_change``: ||f - f0|| / ||f0|| of the pooled backbone features (f0: frozen);
- ``feature_cosine``: cos(f, f0).

    python benchmarks/prefix_init.py [--checkpoint swin3d_b_k400.pth] [--frames 8] [--seeds 3]

Without --checkpoint the backbones are random-init (this machine has no pretrained weights): the
numbers then say how a random prefix mixes into random-init attention, a proxy only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import machine, write_result

PREFIX = {"type": "prefix", "sites": ["attn"], "prefix_length": 16, "hidden": 232, "activation": "relu",
          "dropout": 0.1}
CASES = {
    "video_swin_b": {"family": "video_swin", "name": "swin3d_b", "img_size": 224},
    "vit_b16": {"family": "timm_vit", "name": "vit_base_patch16_224", "img_size": 224},
}


def measure(case: str, frames: int, seed: int, checkpoint: str | None) -> dict:
    from components.adapters.wrapper import AdaptedModule
    from components.config import from_dict
    from components.model import ModelConfig, build_model

    backbone = {**CASES[case], "num_frames": frames, "checkpoint": checkpoint if case == "video_swin_b" else None}
    torch.manual_seed(seed)
    model = build_model(from_dict(ModelConfig, {"backbone": backbone, "adapters": [PREFIX]}), 10).eval()
    lambdas: list[float] = []

    def record(module, args, kwargs):
        layer = module.adapters["prefix"]
        x = args[0]
        view = layer.internals.heads(x)
        pk, _ = layer.internals.prefix_kv(layer.prefix())
        q = view.q * layer.internals.scale
        self_logits = q @ view.k.transpose(-2, -1)
        if view.logit_bias is not None:
            self_logits = self_logits + view.logit_bias
        prefix_logits = torch.einsum("bhnd,hld->bhnl", q, pk)
        lam = torch.sigmoid(prefix_logits.logsumexp(-1) - self_logits.logsumexp(-1))
        lambdas.append(float(lam.mean()))

    wrappers = [m for m in model.modules() if isinstance(m, AdaptedModule) and "prefix" in m.adapters]
    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in wrappers]
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (1, frames, backbone["img_size"], backbone["img_size"], 3), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        adapted = model.features(video)
        for h in handles:
            h.remove()
        saved = {m: m.adapters for m in wrappers}
        for m in wrappers:
            m.adapters = torch.nn.ModuleDict()
        frozen = model.features(video)
        for m, a in saved.items():
            m.adapters = a
    return {
        "lambda_per_block": lambdas,
        "lambda_mean": statistics.mean(lambdas),
        "feature_rel_change": float((adapted - frozen).norm() / frozen.norm()),
        "feature_cosine": float(torch.nn.functional.cosine_similarity(adapted, frozen).mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="local Video Swin-B weights (torchvision state dict)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", default="")
    args = p.parse_args()
    start = time.time()
    results = {}
    for case in args.cases.split(","):
        runs = [measure(case, args.frames, s, args.checkpoint) for s in range(args.seeds)]
        results[case] = {
            "lambda_mean": statistics.mean(r["lambda_mean"] for r in runs),
            "lambda_max_block": max(max(r["lambda_per_block"]) for r in runs),
            "feature_rel_change": statistics.mean(r["feature_rel_change"] for r in runs),
            "feature_cosine": statistics.mean(r["feature_cosine"] for r in runs),
            "seeds": args.seeds,
            "runs": runs,
        }
        r = results[case]
        print(f"{case}: prefix share of attention {r['lambda_mean']:.4f} (max block {r['lambda_max_block']:.4f}), "
              f"features moved {r['feature_rel_change']:.4f} (relative), cosine {r['feature_cosine']:.4f}", flush=True)
    path = write_result("prefix_init", {
        "benchmark": "prefix_init", "command": "python benchmarks/prefix_init.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, "")),
        "settings": vars(args), "machine": machine(), "pretrained": bool(args.checkpoint),
        "seconds": time.time() - start, "cases": results}, args.out or None)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
