"""Layer-wise learning-rate decay (``optim.layer_decay``), for full fine-tuning.

BEiT's rule, as timm's ``param_groups_layer_decay`` applies it: with L blocks, a parameter at depth
d gets ``lr x decay ** (L + 1 - d)``. Depth comes from the backbone's family description, not from
attribute names: the stem (``BackboneSpec.stem``: patch embedding, class token, position table) is
depth 0, everything inside block i (adapters injected there included) is depth i + 1, parameters
between blocks take the depth of the block before them, and anything else (final norm, projection,
pooling, task heads, adapters outside blocks) is depth L + 1, the full LR (timm's rule for what its
group matcher leaves unmatched). A model with several described towers (M2-CLIP's image and text towers) decays each by its own
depth. Each optimiser group is split by scale, keeping its other settings (its own LR, weight
decay), so the schedule (``make_scheduler``) scales every split group from its own peak.
"""

from __future__ import annotations

from torch import nn

from components.backbones.spec import described, described_blocks


def _parameters(owner: nn.Module, path: str) -> list[nn.Parameter]:
    try:
        return [owner.get_parameter(path)]
    except AttributeError:
        pass
    try:
        return list(owner.get_submodule(path).parameters())
    except AttributeError:
        return []  # a stem entry this instance does not have (e.g. timm's reg_token)


def depths(owner: nn.Module, spec) -> dict[int, int]:
    """id(parameter) -> depth inside one described backbone (see module doc). A parameter between
    two blocks (Video Swin's patch merging, ViViT's temporal class token) takes the depth of the
    block before it, in registration order."""
    top = len(spec.blocks) + 1
    depth = {id(p): 0 for path in spec.stem for p in _parameters(owner, path)}
    for i, block in described_blocks(owner, spec):
        depth.update({id(p): i + 1 for p in block.parameters() if id(p) not in depth})
    ordered = [p for _, p in owner.named_parameters()]
    in_blocks = [n for n, p in enumerate(ordered) if depth.get(id(p), 0) > 0]
    last_block_param = in_blocks[-1] if in_blocks else -1
    current = None  # depth of the last block met in registration order
    for n, p in enumerate(ordered):
        if depth.get(id(p), 0) > 0:
            current = depth[id(p)]
        elif id(p) not in depth:
            depth[id(p)] = current if current is not None and n < last_block_param else top
    return depth


def lr_scales(model: nn.Module, decay: float) -> dict[int, float]:
    """id(parameter) -> its LR multiplier, for the parameters of described backbones (others: 1)."""
    scales: dict[int, float] = {}
    for owner, spec in described(model):
        top = len(spec.blocks) + 1
        for key, d in depths(owner, spec).items():
            scales.setdefault(key, decay ** (top - d))
    return scales


def layer_decay_groups(model: nn.Module, groups: list, decay: float, lr: float) -> list[dict]:
    """``groups`` (parameters, or dicts with ``params`` and maybe ``lr``) split by depth scale: each
    sub-group's ``lr`` is its group's (else ``lr``) times its scale; empty sub-groups dropped."""
    if not 0 < decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {decay}")
    scales = lr_scales(model, decay)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": list(groups)}]
    out = []
    for group in groups:
        by_scale: dict[float, list] = {}
        for p in group["params"]:
            by_scale.setdefault(scales.get(id(p), 1.0), []).append(p)
        for scale, params in sorted(by_scale.items(), reverse=True):  # the full-LR part first (logged lr)
            out.append({**group, "params": params, "lr": group.get("lr", lr) * scale, "lr_scale": scale})
    return out
