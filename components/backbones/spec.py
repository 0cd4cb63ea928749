"""A backbone family described once: where its blocks, attention and MLP live, and its token layout.

Adapters target the site names here (``attn``, ``mlp``, ``block``), never attribute paths, so the
same adapter config works on timm ViT, torchvision Video Swin and open_clip towers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components.token_layout import TokenLayout


@dataclass
class BackboneSpec:
    family: str
    feature_dim: int  # width of the pooled clip feature the backbone returns
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    blocks: list[str]  # dotted paths of the transformer blocks, in forward order
    sites: dict[str, str]  # site name -> path relative to a block ("" = the block itself)
    block_dims: list[int]  # channel width at each block
    block_heads: list[int]  # attention heads at each block
    layouts: list[TokenLayout] = field(default_factory=list)  # token layout at each block
    total_params: int = 0  # frozen backbone size, the denominator of "trainable %"
    # Where the family's own checkpoint loads, relative to the backbone module ("vit." for timm):
    # stripping it gives the key layout of a downloaded file (see components.adapters.unwrap).
    checkpoint_root: str = ""
