"""M2-CLIP's loss balance at initialisation: the official code vs the CMC fix, and weights that restore it.

The official code computes its cross-modal classification (CMC) loss as cross-entropy on already
softmaxed scores, CE(softmax(100 v T^T), y): its input lies in [0, 1], so the loss sits near log C
and its gradient is tiny. vidpeft applies cross-entropy to the logits (the correct form), which
makes the CMC term a much larger share of the total gradient under the same official weights
0.5 / 0.5 / 0.1 / 1.0 (contrastive / CMC / CMLM / VC). This script measures, on one batch at
initialisation, every term's loss value and the norm of its gradient over the trainable parameters,
for both CMC forms, and the CMC weight that gives the fixed loss the official gradient share:

    w_cmc' = w_cmc * |grad CMC_official| / |grad CMC_logits|

(the preset pipelines/configs/presets/m2clip/m2clip_balanced.yaml uses it).

    python benchmarks/loss_balance.py [--checkpoint open_clip_model.safetensors] [--classes 400]

Without --checkpoint the towers are random-init (no weights on this machine): a proxy; rerun with
CLIP weights for the number to use.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import ROOT, machine, write_result

PRESET = ROOT / "pipelines" / "configs" / "presets" / "m2clip" / "m2clip_full.yaml"
TERMS = ("contrastive", "cmc", "cmlm", "vc")


def build(args):
    from components.config import from_dict, load_yaml
    from components.model import ModelConfig, build_model

    data = load_yaml(PRESET)["model"]
    data["backbone"].update(num_frames=args.frames, img_size=args.img_size, checkpoint=args.checkpoint)
    names = [f"action number {i}" for i in range(args.classes)]
    torch.manual_seed(args.seed)
    return build_model(from_dict(ModelConfig, data), args.classes, names).train()


def term_gradients(model, batch, official_cmc: bool) -> dict[str, dict[str, float]]:
    """Each enabled term alone (its weight 1, the others 0): loss value and gradient norm."""
    import components.m2clip.model as m2

    mc = model.config.m2clip
    saved = {t: getattr(mc, f"{t}_weight") for t in TERMS}
    original = m2.cross_modal_classification_loss
    if official_cmc:  # the official code: cross-entropy applied to softmax scores
        m2.cross_modal_classification_loss = lambda logits, y: F.cross_entropy(logits.softmax(-1), y)
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    try:
        for term in TERMS:
            for t in TERMS:
                setattr(mc, f"{t}_weight", 1.0 if t == term else 0.0)
            torch.manual_seed(0)  # the same CMLM masks and templates for every pass
            result = model(batch)
            model.zero_grad(set_to_none=True)
            result["loss"].backward()
            norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None))
            out[term] = {"loss": float(result[f"loss/{term}"]), "grad_norm": float(norm)}
    finally:
        m2.cross_modal_classification_loss = original
        for t, w in saved.items():
            setattr(mc, f"{t}_weight", w)
    return out


def shares(terms: dict, weights: dict) -> dict[str, float]:
    total = sum(weights[t] * terms[t]["grad_norm"] for t in terms)
    return {t: weights[t] * terms[t]["grad_norm"] / total for t in terms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="local open_clip ViT-B/16 weights")
    p.add_argument("--classes", type=int, default=400, help="class count (K400: 400)")
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    args = p.parse_args()
    start = time.time()
    model = build(args)
    g = torch.Generator().manual_seed(args.seed)
    batch = {"video": torch.randint(0, 256, (args.batch, args.frames, args.img_size, args.img_size, 3),
                                    dtype=torch.uint8, generator=g),
             "target": torch.randint(0, args.classes, (args.batch,), generator=g)}
    mc = model.config.m2clip
    weights = {t: getattr(mc, f"{t}_weight") for t in TERMS}
    official = term_gradients(model, batch, official_cmc=True)
    fixed = term_gradients(model, batch, official_cmc=False)
    ratio = official["cmc"]["grad_norm"] / fixed["cmc"]["grad_norm"]
    balanced = {**weights, "cmc": weights["cmc"] * ratio}
    result = {
        "benchmark": "loss_balance",
        "command": "python benchmarks/loss_balance.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, "")),
        "settings": vars(args), "machine": machine(), "pretrained": bool(args.checkpoint),
        "official_weights": weights,
        "terms_official_cmc": official, "terms_cmc_on_logits": fixed,
        "cmc_loss_ratio": fixed["cmc"]["loss"] / official["cmc"]["loss"],
        "cmc_grad_ratio": 1 / ratio,
        "shares_official": shares(official, weights),
        "shares_fixed_official_weights": shares(fixed, weights),
        "balanced_weights": balanced,
        "shares_fixed_balanced_weights": shares(fixed, balanced),
        "seconds": time.time() - start,
    }
    for key in ("shares_official", "shares_fixed_official_weights", "shares_fixed_balanced_weights"):
        print(key, {t: round(v, 3) for t, v in result[key].items()})
    print(f"CMC on logits vs on softmax scores: loss x{result['cmc_loss_ratio']:.2f}, gradient x{result['cmc_grad_ratio']:.1f}")
    print(f"balanced weights: {balanced}")
    print(f"wrote {write_result('loss_balance', result, Path(args.out) if args.out else None)}")


if __name__ == "__main__":
    main()
