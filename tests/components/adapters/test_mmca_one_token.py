"""MMCA over one key token in all (one modality, one token): the softmax over it is 1 whatever the
query, so W_q, and an own W_down whose only reader is the query, are not built; every parameter that
is built gets a gradient, and the output is the full attention's. Two or more key tokens (two
modalities, modality_tokens > 1, a sequence modality) still build and train the query and the keys.

The reference below is the full computation written out (W_down, W_q, the fused kv, heads, masked
softmax over the key tokens), with the parts this layer does not build filled in at random.
"""

from __future__ import annotations

import pytest
import torch

from components.adapters.mmca import MMCAConfig, MultiModalCrossAttention
from components.config import from_dict
from components.model import ModelConfig, build_model
from tests.components.adapters.test_caa_one_token import (  # the checks CAA's one-token parts pass
    C,
    DIMS,
    R,
    assert_every_adapter_parameter_trains,
    check_against,
    check_older_weights_load,
    one_site,
    randomized,
    trained_looking,
    unbuilt_parts,
)
from tests.conftest import TINY_VIT

MHVA = {"type": "mhva", "heads": 4, "bottleneck": R}
# case -> (modalities, mmca options, tokens per clip of a sequence modality, parts not built)
CASES = {
    "one_token": (["audio"], {}, 1, {"down.own.0", "q"}),
    "one_token_heads": (["audio"], {"num_heads": 2}, 1, {"down.own.0", "q"}),
    "shared_down": (["audio"], {"share_down_with": "mhva"}, 1, {"q"}),  # W_down is the MHVA's: it trains there
    "two_modalities": (["audio", "flow"], {"num_heads": 2}, 1, set()),
    "two_tokens": (["audio"], {"modality_tokens": 2}, 1, set()),
    "sequence": (["audio"], {}, 3, set()),
}
LAYER_CASES = [c for c in CASES if "share_down_with" not in CASES[c][1]]


def model_for(case: str, seed: int = 0):
    names, extra, tokens, _ = CASES[case]
    mmca = {"type": "mmca", "sites": ["block"], "modalities": names, "bottleneck": R, **extra}
    cfg = from_dict(ModelConfig, {
        "backbone": TINY_VIT, "modalities": [{"name": n, "dim": DIMS[n], "tokens": tokens} for n in names],
        "adapters": [MHVA, mmca] if "share_down_with" in extra else [mmca],
    })
    torch.manual_seed(seed)
    return cfg, build_model(cfg, 3)


def batch(case: str, b=4, seed=1):
    names, _, tokens, _ = CASES[case]
    g = torch.Generator().manual_seed(seed)
    out = {"video": torch.randint(0, 256, (b, 4, 32, 32, 3), dtype=torch.uint8, generator=g),
           "target": torch.randint(0, 3, (b,), generator=g)}
    for n in names:
        out[f"side_{n}"] = torch.randn(b, *([tokens] if tokens > 1 else []), DIMS[n], generator=g)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_every_built_parameter_gets_a_gradient(case):
    _, model = model_for(case)
    trained_looking(model)
    assert_every_adapter_parameter_trains(model, batch(case))
    layers = [m for m in model.modules() if isinstance(m, MultiModalCrossAttention)]
    assert layers and all(unbuilt_parts(m) == CASES[case][3] for m in layers)
    for m in layers:
        key_rows = m.kv.weight.grad[:R]  # kv is [W_k; W_v]
        if CASES[case][3]:
            assert m.q is None and torch.equal(key_rows, torch.zeros_like(key_rows))  # kept: shares a tensor
        else:  # the query and the keys train
            assert m.q.weight.grad.abs().sum() > 0 and key_rows.abs().sum() > 0


def layer_for(case: str) -> MultiModalCrossAttention:
    names, extra, tokens, _ = CASES[case]
    site = one_site({n: DIMS[n] for n in names}, tokens)
    return randomized(MultiModalCrossAttention(MMCAConfig(modalities=names, bottleneck=R, **extra), site))


def full_reference(layer, params, x, feats, present):
    """Every part built: Q = ReLU(x W_down) W_q, K and V from the fused kv over all modality tokens,
    softmax per head over the tokens present; delta = s * up(o W_o), zero for a sample with none."""
    def lin(name, t):
        return t @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    heads, b, length = layer.config.num_heads, x.shape[0], x.shape[1]
    d = R // heads
    h = torch.relu(lin("down.own.0", x))  # b l r
    tokens, mask = [], []
    for n, feat in feats.items():
        feat = feat * present[n].view(-1, *[1] * (feat.dim() - 1))  # absent: zeroed slot
        t = lin(f"inputs.proj.{n}", feat).reshape(b, -1, R)  # b m r (a clip vector: M*r split in M)
        tokens.append(t)
        mask.append(present[n][:, None].expand(b, t.shape[1]))
    tokens, mask = torch.cat(tokens, 1), torch.cat(mask, 1)  # b s r, b s
    q = lin("q", h).view(b, length, heads, d).transpose(1, 2)  # b h l d
    kv = lin("kv", tokens).view(b, -1, 2, heads, d)  # b s two h d
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # b h s d
    logits = (q @ k.transpose(-1, -2) / d**0.5).masked_fill(~mask[:, None, None], float("-inf"))
    probs = torch.nan_to_num(logits.softmax(-1))  # no token present: all -inf -> 0
    o = (probs @ v).transpose(1, 2).reshape(b, length, R)
    return params["scale"] * lin("up", lin("out", o)) * mask.any(1)[:, None, None]


@pytest.mark.parametrize("case", LAYER_CASES)
def test_output_equals_the_full_attention(case):
    names, _, tokens, _ = CASES[case]
    check_against(full_reference, layer_for(case), names, {"down.own.0": (R, C), "q": (R, R)}, tokens)


@pytest.mark.parametrize("case", ["one_token", "shared_down"])
def test_weights_that_hold_the_unbuilt_parts_still_load(case, tmp_path):
    """A run saved when W_q (and W_down) were built."""
    shapes = {"down.own.0": (R, TINY_VIT["kwargs"]["embed_dim"]), "q": (R, R)}
    check_older_weights_load(tmp_path, lambda seed: model_for(case, seed), batch(case), "mmca", shapes,
                             "inputs.proj.flow")


def test_a_shared_down_projection_is_still_checked_when_nothing_reads_it():
    cfg = {"backbone": TINY_VIT, "modalities": [{"name": "audio", "dim": 6}],
           "adapters": [{"type": "mmca", "modalities": ["audio"], "share_down_with": "nope"}]}
    with pytest.raises(ValueError, match="expected one adapter named 'nope'"):
        build_model(from_dict(ModelConfig, cfg), 3)
