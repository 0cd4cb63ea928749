"""A/B measurements of the optimisations the pipeline keeps, each against the code path it replaced.

Each comparison runs the same work both ways in one fresh process (alternating A B A B, so a drift
in machine load hits both) and reports the median process CPU seconds (and wall seconds) per call:

- ``prefix``: one ViT-B attention site with gated prefix tuning (8 frames x 197 tokens, L = 16),
  forward + backward: the one-pass path (``PrefixTuning.replace_base``: two fused attentions) vs the
  two-pass path (frozen attention + unfused recomputation). Also the bytes autograd saves for backward.
- ``adamw``: the optimizer step over ViT-B's 86M parameters: fused AdamW vs the default (foreach).
- ``mha``: one open_clip ViT-B attention layer (``nn.MultiheadAttention``, batch-first, 8 frames)
  forward + backward with gradients: ``SelfAttention``'s fast path vs ``nn.MultiheadAttention``.
- ``text``: M2-CLIP's class-text encoding with gradients (open_clip ViT-B-16 text tower, text adapter
  in the last block, ``--text-classes`` prompts): only the adapted block run per step (the frozen
  blocks' output reused) vs the whole tower per step.

    python benchmarks/optimisations.py                      # all four, 5 repetitions each
    python benchmarks/optimisations.py --only prefix,mha --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_run_args, emit, machine, run_isolated, summary, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))
CASES = ("prefix", "adamw", "mha", "text")


def ab(a: Callable[[], None], b: Callable[[], None], repeats: int, warmup: int = 1) -> dict:
    """Alternate a and b; per call: CPU seconds and wall seconds, summarised."""
    for _ in range(warmup):
        a()
        b()
    out = {"a": {"cpu": [], "wall": []}, "b": {"cpu": [], "wall": []}}
    for _ in range(repeats):
        for name, fn in (("a", a), ("b", b)):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            out[name]["cpu"].append(time.process_time() - c0)
            out[name]["wall"].append(time.perf_counter() - t0)
    return {k: {"cpu_s": summary(v["cpu"]), "wall_s": summary(v["wall"])} for k, v in out.items()}


def saved_bytes(fn: Callable[[], "object"]) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn()``'s graph is alive."""
    import torch

    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(sizes)


def case_prefix(args) -> dict:
    import timm
    import torch

    from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
    from components.adapters.prefix import PrefixConfig, PrefixTuning
    from components.adapters.wrapper import AdaptedModule

    block = timm.create_model("vit_base_patch16_224", pretrained=False).blocks[0].requires_grad_(False)
    site = SiteInfo("b.attn", "attn", 0, 768, 12, "timm_vit", TokenLayout(kind="sequence"), ForwardContext(),
                    base=block.attn)
    layer = PrefixTuning(PrefixConfig(prefix_length=16, hidden=192), site)
    with torch.no_grad():
        layer.gate.fill_(0.5)  # a trained-like gate: both attentions matter
    wrapper = AdaptedModule(block.attn, site)
    wrapper.add("prefix", layer)
    x = torch.randn(args.frames, 197, 768, requires_grad=True)

    def one_pass():
        return wrapper(x)

    def two_pass():
        frozen = block.attn(x)
        return frozen + layer(x, frozen)

    r = ab(lambda: one_pass().sum().backward(), lambda: two_pass().sum().backward(), args.repeats)
    return {"a_name": "one pass", "b_name": "two passes", **r,
            "saved_bytes": {"a": saved_bytes(one_pass), "b": saved_bytes(two_pass)}}


def case_adamw(args) -> dict:
    import timm
    import torch

    model = timm.create_model("vit_base_patch16_224", pretrained=False)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    fused = torch.optim.AdamW(params, lr=1e-4, fused=True)
    default = torch.optim.AdamW(params, lr=1e-4)
    r = ab(fused.step, default.step, args.repeats)
    return {"a_name": "fused", "b_name": "default (foreach)", **r}


def case_mha(args) -> dict:
    import copy

    import torch
    from torch import nn

    from components.backbones.fast_mha import use_fast_self_attention

    ref = nn.MultiheadAttention(768, 12, batch_first=True).requires_grad_(False)
    fast = copy.deepcopy(ref)
    use_fast_self_attention(fast)
    x = torch.randn(args.frames, 197, 768, requires_grad=True)

    def run(m):
        return lambda: m(x, x, x, need_weights=False)[0].sum().backward()

    return {"a_name": "fast path", "b_name": "nn.MultiheadAttention", **ab(run(fast), run(ref), args.repeats)}


def case_text(args) -> dict:
    import torch
    import torch.nn.functional as F
    from einops import rearrange

    from components.model import ModelConfig, build_model
    from components.config import from_dict

    names = [f"class number {i}" for i in range(args.text_classes)]
    cfg = from_dict(ModelConfig, {
        "kind": "m2clip", "backbone": {"family": "openclip_vit", "name": "ViT-B-16", "img_size": 224, "num_frames": 8},
        "adapters": [], "m2clip": {"cmlm": False, "text_adapters": [  # the m2clip_full preset's text adapter
            {"type": "text_adapter", "sites": ["pre_mlp"], "layers": [-1], "bottleneck": 384}]},
    })
    model = build_model(cfg, len(names), names).train()
    flat = rearrange(model.prompt_ids, "k c l -> (k c) l")
    start = model.text.frozen_prefix_length()

    def cached():
        model._encode_prompts(model.class_names, model.templates, chunk=None).sum().backward()

    def whole():
        F.normalize(model.text(flat), dim=-1).sum().backward()

    r = ab(cached, whole, args.repeats)
    return {"a_name": f"blocks {start}+ only", "b_name": "whole tower", "prompts": len(flat),
            "frozen_blocks": start, **r}


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = {"case": args.case, **globals()[f"case_{args.case}"](args)}
    result["loadavg"] = list(os.getloadavg())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(CASES), help=f"comma-separated, from {CASES}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--frames", type=int, default=8, help="frames of one clip (the attention batch)")
    p.add_argument("--text-classes", type=int, default=100, help="class prompts for the text case")
    add_run_args(p, "optimisations")
    args = p.parse_args(argv)
    if args.worker:
        emit(worker(args))
        return 0
    cases = [c for c in args.only.split(",") if c]
    if unknown := [c for c in cases if c not in CASES]:
        p.error(f"unknown case(s) {unknown}; known: {CASES}")
    info, started = machine("cpu"), time.time()
    shared = [f"--repeats={args.repeats}", f"--frames={args.frames}", f"--text-classes={args.text_classes}",
              f"--threads={args.threads}"]
    results = {}
    for case in cases:
        r = run_isolated(Path(__file__), ["--worker=ab", f"--case={case}", *shared], timeout=3600)
        a, b = r["a"]["cpu_s"]["median"], r["b"]["cpu_s"]["median"]
        r["cpu_ratio"] = a / b
        results[case] = r
        extra = ""
        if "saved_bytes" in r:
            extra = f"; saved for backward {r['saved_bytes']['a'] / 2**20:.0f} vs {r['saved_bytes']['b'] / 2**20:.0f} MiB"
        print(f"{case:7s} {r['a_name']}: {a:.3f} CPU s vs {r['b_name']}: {b:.3f} CPU s -> {a / b:.2f}x "
              f"(load {r['loadavg'][0]:.1f}){extra}", flush=True)
    command = "python benchmarks/optimisations.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("optimisations", {
        "benchmark": "optimisations", "command": command.strip(), "settings": vars(args) | {"worker": None},
        "machine": info, "loadavg_end": list(os.getloadavg()), "seconds": time.time() - started,
        "results": results,
    }, Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
