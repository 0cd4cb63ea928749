"""VideoMAE's published layouts -> the ``videomae`` family's (timm-block) names.

- Original release (MCG-NJU/VideoMAE): fine-tuned ``checkpoint.pth`` holds ``patch_embed.proj``
  (a Conv3d), ``blocks.i.{norm1, attn.qkv.weight, attn.q_bias, attn.v_bias, attn.proj, norm2,
  mlp.fc1, mlp.fc2}``, ``fc_norm`` (or ``norm``) and a ``head``; pre-training files hold the same
  under ``encoder.`` beside the MAE ``decoder.*``, ``encoder_to_decoder`` and ``mask_token``.
- Hugging Face transformers: ``videomae.`` (or no prefix) + ``embeddings.patch_embeddings.projection``,
  ``encoder.layer.i.attention.attention.{query,key,value}`` with ``q_bias``/``v_bias`` (4.x) or
  ``query.bias``/``value.bias`` (5.x), ``attention.output.dense``, ``layernorm_before/after``,
  ``intermediate.dense``, ``output.dense``, ``layernorm``, ``fc_norm``, ``classifier``.
The fused ``qkv.bias`` is (query bias, zeros, value bias): VideoMAE has no key bias.
"""

from __future__ import annotations

import re

import torch

from components.weights.keys import rename_start

MAE_DECODER = ("decoder.", "encoder_to_decoder.", "mask_token", "decoder_pos_embed")

_HF_BLOCK = {
    "layernorm_before.": "norm1.", "layernorm_after.": "norm2.", "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.", "output.dense.": "mlp.fc2.",
}


def detect_videomae(state: dict[str, torch.Tensor]) -> str | None:
    keys = set(state)
    if any(re.match(r"(videomae\.)?encoder\.layer\.\d+\.attention\.attention\.query\.weight$", k) for k in keys):
        return "videomae_hf"
    w = state.get("patch_embed.proj.weight", state.get("encoder.patch_embed.proj.weight"))
    if w is not None and w.dim() == 5 and any(re.match(r"(encoder\.)?blocks\.\d+\.", k) for k in keys):
        return "videomae_release"
    return None


def _fuse_bias(q: torch.Tensor | None, k: torch.Tensor | None, v: torch.Tensor | None, dim: int,
               like: torch.Tensor) -> torch.Tensor:
    zeros = torch.zeros(dim, dtype=like.dtype)
    return torch.cat([zeros if b is None else b for b in (q, k, v)])


def videomae_release_to_family(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    notes = ["converted VideoMAE release names (q_bias/v_bias fused into qkv.bias)"]
    if any(k.startswith("encoder.blocks.") for k in state):
        dropped = [k for k in state if not k.startswith("encoder.")]
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        notes.append(f"pre-training file: encoder used, {len(dropped)} MAE decoder tensors dropped")
    out = {k: v for k, v in state.items() if not re.search(r"attn\.[qv]_bias$", k)}
    for key in [k for k in state if k.endswith("attn.qkv.weight")]:
        base = key.removesuffix("qkv.weight")
        if f"{base}q_bias" in state or f"{base}v_bias" in state:
            dim = state[key].shape[1]
            out[f"{base}qkv.bias"] = _fuse_bias(state.get(f"{base}q_bias"), None, state.get(f"{base}v_bias"), dim,
                                                state[key])
    return out, notes


def videomae_hf_to_family(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    notes = ["converted Hugging Face VideoMAE names (query/key/value fused into qkv)"]
    dropped = [k for k in state if k.startswith(MAE_DECODER)]
    if dropped:
        notes.append(f"pre-training file: {len(dropped)} MAE decoder tensors dropped")
    body = {k.removeprefix("videomae."): v for k, v in state.items() if not k.startswith(MAE_DECODER)}
    out: dict[str, torch.Tensor] = {}
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in body.items():
        if m := re.match(r"encoder\.layer\.(\d+)\.attention\.attention\.(.+)$", key):
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif m := re.match(r"encoder\.layer\.(\d+)\.(.+)$", key):
            out[f"blocks.{m.group(1)}.{rename_start(m.group(2), _HF_BLOCK)}"] = value
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("layernorm."):
            out["norm." + key.removeprefix("layernorm.")] = value
        elif key.startswith("classifier."):
            out["head." + key.removeprefix("classifier.")] = value  # dropped as the classifier head
        else:
            out[key] = value  # fc_norm.*, or anything strict loading will report
    for i, att in layers.items():
        q, k, v = att["query.weight"], att["key.weight"], att["value.weight"]
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, v])  # (3 d, d): query, key, value rows
        out[f"blocks.{i}.attn.qkv.bias"] = _fuse_bias(att.get("q_bias", att.get("query.bias")), att.get("key.bias"),
                                                      att.get("v_bias", att.get("value.bias")), q.shape[0], q)
    return out, notes
