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
- ``ted``: one ViT-B TED adapter (bottleneck 384, 8 frames), forward + backward: the fused path (one
  fc1 and one fc2 GEMM for both branches, channels-last convolutions) vs the unfused formula.
- ``quickgelu``: open_clip's QuickGELU on one ViT-B MLP activation (8 x 197 x 3072), forward +
  backward: through SiLU (``fast_gelu.py``) vs ``x * sigmoid(1.702 x)``.
- ``mhva``: one ViT-B MHVA site (4 groups + the class token's, bottleneck 64), forward + backward:
  the class token apart and even groups gathered as a permutation vs every group padded to 49 tokens
  and gathered by index (accumulating backward).
- ``qkv``: one prefix-tuned timm ViT-B attention site (L = 16), forward + backward: q/k/v split with
  ``unbind`` on the projection's layout (``split_heads``) vs indexing a (3, B, H, N, dh) permutation.

    python benchmarks/optimisations.py                      # all of them, 5 repetitions each
    python benchmarks/optimisations.py --only prefix,mha --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_run_args, emit, machine, run_isolated, summary, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))
CASES = ("prefix", "adamw", "mha", "text", "ted", "quickgelu", "mhva", "qkv")


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


def fwd_bwd(fn: Callable[[], "object"], grad) -> Callable[[], None]:
    return lambda: fn().backward(grad)


def case_ted(args) -> dict:
    import torch
    from einops import rearrange

    from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
    from components.adapters.ted import TEDAdapter, TEDConfig

    context = ForwardContext()
    context.num_frames = args.frames
    site = SiteInfo("b.pre_attn", "pre_attn", 0, 768, 12, "openclip_vit",
                    TokenLayout(kind="frames", grid=(14, 14), num_prefix_tokens=1), context)
    layer = TEDAdapter(TEDConfig(bottleneck=384), site)
    for p in layer.parameters():  # trained-like weights (the zero-initialised ones too)
        torch.nn.init.normal_(p, std=0.02)
    x = torch.randn(args.frames, 197, 768, requires_grad=True)
    e, d, t = layer.enhance, layer.difference, args.frames

    def unfused():  # Eq. 6-8 as written: two branches, input-side differences, Conv1d over (b n) r t
        h = rearrange(e.fc1(x), "(b t) n r -> (b n) r t", t=t)
        out = e.fc2(rearrange(e.conv(h), "(b n) r t -> (b t) n r", n=197))
        z = rearrange(x[:, 1:], "(b t) n c -> b t n c", t=t)
        diff = torch.cat([torch.zeros_like(z[:, :1]), z[:, 1:] - z[:, :-1]], dim=1)
        h = rearrange(d.fc1(diff), "b t (h w) r -> (b t) r h w", h=14)
        td = d.fc2(rearrange(d.conv(h), "bt r h w -> bt (h w) r"))
        return out + torch.cat([torch.zeros_like(x[:, :1]), td], dim=1)

    grad = torch.randn(args.frames, 197, 768)
    r = ab(fwd_bwd(lambda: layer(x, None), grad), fwd_bwd(unfused, grad), args.repeats)
    return {"a_name": "fused", "b_name": "unfused", **r}


def case_quickgelu(args) -> dict:
    import torch
    from open_clip.transformer import QuickGELU

    from components.backbones.fast_gelu import FastQuickGELU

    x = torch.randn(args.frames, 197, 3072, requires_grad=True)
    grad = torch.randn_like(x)
    fast, plain = FastQuickGELU(), QuickGELU()
    r = ab(fwd_bwd(lambda: fast(x), grad), fwd_bwd(lambda: plain(x), grad), args.repeats)
    return {"a_name": "via SiLU", "b_name": "x * sigmoid(1.702 x)", **r,
            "saved_bytes": {"a": saved_bytes(lambda: fast(x)), "b": saved_bytes(lambda: plain(x))}}


def case_mhva(args) -> dict:
    import torch

    from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
    from components.adapters.mhva import MHVAConfig, MultiHeadVisionAdapter
    from components.adapters.tokens import group_plan, token_groups

    layout = TokenLayout(kind="frames", grid=(14, 14), num_prefix_tokens=1)
    site = SiteInfo("b.mlp", "mlp", 0, 768, 12, "timm_vit", layout, ForwardContext(), base=torch.nn.Identity())
    layer = MultiHeadVisionAdapter(MHVAConfig(heads=4, bottleneck=64), site)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.02)
    x = torch.randn(args.frames, 197, 768, requires_grad=True)
    index, slot = group_plan(token_groups(tuple(x.shape), layout, 4, layer.grid, True), layer.num_groups)

    def padded():  # every group (the class token's too) padded to the largest and gathered by index
        h = torch.relu(torch.einsum("bgmd,gdr->bgmr", x[:, index], layer.down_weight) + layer.down_bias[:, None])
        y = torch.einsum("bgmr,grd->bgmd", h, layer.up_weight) + layer.up_bias[:, None]
        flat = y.flatten(1, 2)
        flat = torch.cat([flat, flat.new_zeros(flat.shape[0], 1, flat.shape[2])], dim=1)
        return layer.scale * flat[:, slot]

    grad = torch.randn(args.frames, 197, 768)
    r = ab(fwd_bwd(lambda: layer(x, x), grad), fwd_bwd(padded, grad), args.repeats)
    return {"a_name": "permutation, class token apart", "b_name": "padded index gathers", **r}


def case_qkv(args) -> dict:
    import types

    import timm
    import torch
    from einops import rearrange

    from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
    from components.adapters.prefix import PrefixConfig, PrefixTuning
    from components.adapters.wrapper import AdaptedModule
    from components.backbones.attention import HeadsView

    block = timm.create_model("vit_base_patch16_224", pretrained=False).blocks[0].requires_grad_(False)

    def site_with_prefix():
        site = SiteInfo("b.attn", "attn", 0, 768, 12, "timm_vit", TokenLayout(kind="sequence"), ForwardContext(),
                        base=block.attn)
        torch.manual_seed(0)
        wrapper = AdaptedModule(block.attn, site)
        wrapper.add("prefix", PrefixTuning(PrefixConfig(prefix_length=16, hidden=192, dropout=0.0), site))
        return wrapper

    def indexed_heads(self, x):  # the split this replaced
        qkv = rearrange(self.module.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        return HeadsView(qkv[0], qkv[1], qkv[2], None, lambda y: rearrange(y, "b h n d -> b n (h d)"))

    new, old = site_with_prefix(), site_with_prefix()
    internals = old.adapters["prefix"].internals
    internals.heads = types.MethodType(indexed_heads, internals)
    x = torch.randn(args.frames, 197, 768, requires_grad=True)
    grad = torch.randn(args.frames, 197, 768)
    r = ab(fwd_bwd(lambda: new(x), grad), fwd_bwd(lambda: old(x), grad), args.repeats)
    return {"a_name": "unbind (split_heads)", "b_name": "indexed permutation", **r}


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
