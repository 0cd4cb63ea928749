"""A backbone family described once: where its blocks, attention and MLP live, and its token layout.

Adapters target the site names here (``attn``, ``mlp``, ``block``), never attribute paths, so the
same adapter config works on timm ViT, torchvision Video Swin and open_clip towers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from components.token_layout import TokenLayout


# timm's ViT Block: ``x + drop_path1(ls1(attn(...)))``, ``x + drop_path2(ls2(mlp(...)))``; its stem
TIMM_RESIDUAL_BRANCHES = ("drop_path1", "drop_path2")
TIMM_STEM = ("cls_token", "reg_token", "pos_embed", "patch_embed", "norm_pre")


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
    # Stochastic depth (optim.drop_path): modules, relative to a block, whose output is a residual
    # branch about to be added to the stream (empty = this family takes no drop-path).
    residual_branches: list[str] = field(default_factory=list)
    # Layer-wise LR decay (optim.layer_decay): parameters or modules before the first block (patch
    # embedding, class token, position table), relative to the backbone; depth 0, the lowest LR.
    stem: list[str] = field(default_factory=list)


def described(model: nn.Module) -> list[tuple[nn.Module, BackboneSpec]]:
    """Every module inside ``model`` that carries its own BackboneSpec (an attribute ``spec``, not a
    property forwarding to a child), with that spec: the backbones whose blocks options act on."""
    out = []
    for module in model.modules():
        spec = module.__dict__.get("spec")
        if isinstance(spec, BackboneSpec):
            out.append((module, spec))
    return out


def described_blocks(owner: nn.Module, spec: BackboneSpec) -> list[tuple[int, nn.Module]]:
    """(index in ``spec.blocks``, block) for each described block that ``owner`` builds."""
    out = []
    for i, path in enumerate(spec.blocks):
        try:
            out.append((i, owner.get_submodule(path)))
        except AttributeError:
            continue  # a described block this instance does not build
    return out
