"""Cross-attention adapters for side modalities (CAA, CM3T Sec. 3.3), fused with AdapterFusion.

One cross-attention per modality listed in ``modalities`` (names from ``model.modalities``; their
feature widths come from there through ``ForwardContext.modality_dims``), all inside one layer:

    h   = ReLU(x W_down)                               Q = V = h: the clip's bottleneck tokens (B, L, r)
    K_n = reshape(m_n W_K,n)                           modality n's clip feature -> M key tokens (B, M, r)
    S   = h K_n^T / sqrt(r)                            (B, L, M)
    c_n = softmax_L(S)^T h                             each key token gathers the video tokens it matches
    z_n = softmax_M(S) c_n                             and every video token reads them back (B, L, r)
    o   = AdapterFusion(h; z_1..z_N)                   softmax over the modalities present
    delta = s * up(o)                                  up zero-initialised: identity at init

Modality tokens: a modality is either one vector per clip, (B, D), projected to ``modality_tokens``
key tokens (B, M, r) by one Linear(D, M*r); or a sequence per clip (``model.modalities[].tokens`` =
M > 1: audio frames, optical flow per time bin, transcript tokens; manifest ``feature_tokens``),
(B, M, D), each token projected by a Linear(D, r). Sequences are what the paper's modalities are
(EK-100's audio and flow are time series): the keys then differ per token of the modality.

Reading of the paper (``values``): it states Q = V = ReLU(x W_down) and K = the modality embedding.
Attention weights (L x M) can only combine values indexed like the keys, so ``values: video`` (the
literal reading) normalises the scores over the video tokens (the axis of V) to pool the video, then
distributes the M pooled vectors back to the tokens by the same scores normalised over M. The
modality then decides WHICH video features are pooled and where they go, but its own content never
reaches the tokens; with one key token (M = 1) every token even receives the same summary. With
M > 1 modality tokens, each video token reads a different mix of M modality-selected summaries.
``values: modality`` is the documented alternative: standard cross-attention (Q from the video
bottleneck, K and V from the modality), so the modality's content reaches the tokens, which the
paper's +8.4% from adding modalities suggests must happen. On the synthetic set, whose side feature
codes the class, the literal form barely learns from it while this form does (README, "What the
demo shows"). Which reading each preset uses and why: README, "CAA: which reading".

Tokens of one clip are attended together: per-frame sites (B*T, N, C) are regrouped to (B, T*N, C).
``share_down_with: <adapter key>`` takes W_down from that MHVA in the same block (the paper: "W_down is
the same as that in Equation 2"), applied to this site's input; otherwise the CAA has its own.

One key token: an attention whose every key set has one token (M = 1) gives that key weight exactly
1 (softmax of one logit), whatever the scores. Under ``values: modality`` such a modality's output is
its value tokens broadcast to every video token (z_n = v_n), so its key projection, and W_down when
nothing else reads h, could never change the output nor get a gradient; likewise AdapterFusion over
one modality (its query and key, see fusion.py). Those parts are not built (known at build time from
``modality_tokens`` and ``model.modalities[].tokens``); the output is the same function. Their names
are listed in ``unbuilt_keys``, so weights saved by a version that built them still load (skipped).
Under ``values: video`` the keys shape the pooling over the video tokens, so they are always built.

Missing modalities: a modality absent from the batch, or a sample whose ``side_<name>_mask`` is false,
is masked out of the fusion softmax (not zero-filled); its feature slot is zeroed before use, so
garbage (even NaN) there cannot reach the output. A sample with no modality gets a zero delta
(the up-projection's bias is masked too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from components.adapters.base import WIDTH_HELP, AdapterConfig, AdapterLayer, SiteInfo, Width, check_width, scaled_width, zero_linear
from components.adapters.fusion import ModalityFusion
from components.adapters.registry import register_adapter
from components.adapters.tokens import clip_tokens
from components.config import ConfigError, cfg

FUSIONS = ("adapterfusion", "sum")
VALUES = ("video", "modality")


@dataclass
class CAAConfig(AdapterConfig):
    type: str = cfg("caa", "adapter type")
    sites: list[str] = cfg(["block"], "backbone sites (CM3T: x is the input of the block)")
    modalities: list[str] = cfg([], "side modalities, one cross-attention each (names from model.modalities); "
                                    "empty = every modality in model.modalities (one preset for datasets with different ones)")
    bottleneck: Width = cfg(64, "width r of Q = V = ReLU(x W_down) and of the modality keys" + WIDTH_HELP)
    modality_tokens: int = cfg(1, "key tokens M a per-clip modality vector is projected to (sequence "
                               "modalities, model.modalities[].tokens > 1, bring their own M tokens)")
    share_down_with: str = cfg("", "adapter key (an MHVA in the same block) whose W_down gives Q = V; empty = own")
    fusion: str = cfg("adapterfusion", "how modality outputs combine: adapterfusion (masked softmax) or sum")
    scale: float = cfg(1.0, "initial value of the output scale s")
    learnable_scale: bool = cfg(True, "learn s")
    dropout: float = cfg(0.0, "dropout on the bottleneck activations")
    values: str = cfg("video", "attention values: video (the paper: Q = V = ReLU(x W_down)) or modality "
                      "(standard cross-attention, K and V from the modality: its content reaches the tokens)")

    def __post_init__(self) -> None:
        if self.values not in VALUES:
            raise ValueError(f"values must be one of {VALUES}, got {self.values!r}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities has duplicates: {self.modalities}")
        check_width(self.bottleneck, "bottleneck")
        if self.modality_tokens <= 0:
            raise ValueError("modality_tokens must be positive")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")


def adapter_modalities(site: SiteInfo, config) -> list[str]:
    """The adapter's modalities: its own list, or (empty) every modality the model is configured with."""
    names = list(config.modalities) or list(site.context.modality_dims)
    if not names:
        raise ConfigError(f"adapter {config.key!r}: no side modality (its modalities and model.modalities are empty)")
    return names


def modality_dim(site: SiteInfo, name: str, key: str) -> int:
    dims = site.context.modality_dims
    if name not in dims:
        raise ConfigError(
            f"adapter {key!r}: modality {name!r} is not in model.modalities (configured: {sorted(dims)})"
        )
    if dims[name] <= 0:
        raise ConfigError(f"model.modalities: {name!r} has no feature dim yet (dim: 0 must be resolved first)")
    return dims[name]


def side_feature(context, name: str, batch: int, dim: int, like: torch.Tensor,
                 tokens: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B, D), or (B, M, D) for a sequence of ``tokens`` = M > 1, with absent samples
    zeroed; present (B,) bool) for one modality."""
    shape = (batch, dim) if tokens <= 1 else (batch, tokens, dim)
    feat = context.side.get(name)
    if feat is None:
        return like.new_zeros(shape), torch.zeros(batch, dtype=torch.bool, device=like.device)
    if tuple(feat.shape) != shape:
        raise ValueError(f"side input {name!r}: expected {shape}, got {tuple(feat.shape)}")
    mask = context.side_mask.get(name)
    present = torch.ones(batch, dtype=torch.bool, device=like.device) if mask is None else mask.to(like.device).bool()
    where = present.view(batch, *([1] * (feat.dim() - 1)))
    feat = torch.where(where, feat.to(like), torch.zeros((), dtype=like.dtype, device=like.device))
    return feat, present


class ModalityTokens(nn.Module):
    """Each modality's input -> (B, M, r) tokens: a clip vector (B, D) through Linear(D, M*r)
    (M = ``modality_tokens``), or a sequence (B, M, D) token by token through Linear(D, r)."""

    def __init__(self, site: SiteInfo, dims: dict[str, int], width: int, modality_tokens: int) -> None:
        super().__init__()
        self.width = width
        self.tokens = {n: site.context.modality_tokens.get(n, 1) for n in dims}
        self.proj = nn.ModuleDict({
            n: nn.Linear(d, width if self.tokens[n] > 1 else modality_tokens * width) for n, d in dims.items()
        })

    def forward(self, name: str, feat: torch.Tensor) -> torch.Tensor:
        out = self.proj[name](feat)
        if self.tokens[name] > 1:
            return out  # b m r
        return rearrange(out, "b (m r) -> b m r", r=self.width)


class SharedDown(nn.Module):
    """ReLU(x W_down): own weights, or those of a sibling MHVA (resolved lazily, not registered twice)."""

    def __init__(self, config, site: SiteInfo) -> None:
        super().__init__()
        self.key = config.share_down_with
        self.site = site
        self.bottleneck = scaled_width(config.bottleneck, site.dim)
        self.own = None if self.key else nn.Sequential(nn.Linear(site.dim, self.bottleneck), nn.ReLU())
        self._shared: list = []

    def bind(self) -> None:
        """Find the adapter to share with (called by the model after injection, or on first use)."""
        if not self.key or self._shared:
            return
        other = self.site.context.find_layer(self.site.block_index, self.key, self.site.site)
        if not hasattr(other, "hidden"):
            raise ConfigError(f"share_down_with: adapter {self.key!r} ({type(other).__name__}) has no down-projection to share")
        width = other.down_weight.shape[-1]
        if width != self.bottleneck:
            raise ConfigError(f"share_down_with: {self.key!r} has bottleneck {width}, this adapter {self.bottleneck}")
        self._shared.append(other)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.own is not None:
            return self.own(x)
        self.bind()
        return self._shared[0].hidden(x)


class CrossAttentionAdapter(AdapterLayer):
    def __init__(self, config: CAAConfig, site: SiteInfo) -> None:
        super().__init__(config, site)
        r, m = scaled_width(config.bottleneck, site.dim), config.modality_tokens
        self.dims = {n: modality_dim(site, n, config.key) for n in adapter_modalities(site, config)}
        self.tokens = {n: site.context.modality_tokens.get(n, 1) for n in self.dims}
        # Parts that only shape attention weights over one key token are not built ("One key token").
        weighted = {n: d for n, d in self.dims.items()
                    if config.values == "video" or (self.tokens[n] if self.tokens[n] > 1 else m) > 1}
        fusion = config.fusion == "adapterfusion"
        single = len(self.dims) == 1
        self.reads_h = config.values == "video" or bool(weighted) or (fusion and not single)
        # kept when shared (no weights of its own): share_down_with is still checked by bind()
        self.down = SharedDown(config, site) if self.reads_h or config.share_down_with else None
        self.drop = nn.Dropout(config.dropout)
        self.keys = ModalityTokens(site, weighted, r, m) if weighted else None
        self.values = ModalityTokens(site, self.dims, r, m) if config.values == "modality" else None
        self.fusion = ModalityFusion(r, single=single) if fusion else None
        self.up = zero_linear(r, site.dim)
        self.register_scale(config.scale, config.learnable_scale)
        unbuilt = [f"keys.proj.{n}" for n in self.dims if n not in weighted]
        unbuilt += [] if self.down is not None else ["down.own.0"]
        unbuilt += ["fusion.query", "fusion.key"] if fusion and single else []
        self.unbuilt_keys = tuple(f"{part}.{p}" for part in unbuilt for p in ("weight", "bias"))

    def bind(self) -> None:
        if self.down is not None:
            self.down.bind()

    def cross_attend(self, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """Q = V = h (B, L, r), keys k (B, M, r) -> (B, L, r); with modality values v (B, M, r), Q = h only."""
        scores = torch.einsum("blr,bmr->blm", h, k) * h.shape[-1] ** -0.5
        if v is not None:  # standard cross-attention: each token reads the modality's value tokens
            return torch.einsum("blm,bmr->blr", scores.softmax(dim=2), v)
        pooled = torch.einsum("blm,blr->bmr", scores.softmax(dim=1), h)  # each key gathers video tokens
        return torch.einsum("blm,bmr->blr", scores.softmax(dim=2), pooled)  # tokens read them back

    def forward(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        if self.reads_h:
            h, restore = clip_tokens(self.down(x), self.site.layout, self.context.num_frames)  # b l r
            h = like = self.drop(h)
        else:  # nothing reads h: x gives the clip's token count and layout
            h, (like, restore) = None, clip_tokens(x, self.site.layout, self.context.num_frames)  # b l c
        b, length = like.shape[:2]
        outs, present = [], []
        for name in self.dims:
            feat, here = side_feature(self.context, name, b, self.dims[name], like, self.tokens[name])
            v = self.values(name, feat) if self.values is not None else None  # b m r
            if self.keys is not None and name in self.keys.proj:
                outs.append(self.cross_attend(h, self.keys(name, feat), v))
            else:  # one value token with weight 1: every video token reads it
                outs.append(v.expand(b, length, v.shape[-1]))
            present.append(here)
        z = torch.stack(outs, dim=2)  # b l n r
        present = torch.stack(present, dim=1)  # b n
        if self.fusion is not None:
            o = self.fusion(h, z, present)
        else:
            o = (z * present[:, None, :, None]).sum(dim=2)
        y = self.up(o) * present.any(dim=1)[:, None, None]  # no modality at all: zero, up's bias included
        return self.scale * restore(y)


register_adapter("caa", CAAConfig, CrossAttentionAdapter,
                 not_mergeable="cross-attention to side-modality features that change per clip")
