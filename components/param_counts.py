"""Trainable-parameter accounting as the papers report it.

The papers' "trainable %" column (CM3T Tables 4/5: 12.8% for MHVA + PT, 100% for full fine-tuning;
M2-CLIP's "tunable params") is the adapters' (or, when fine-tuning, the backbone's) trainable
parameters relative to the frozen backbone: the task head is not in it. A head's size depends on the
dataset, not the method (EK-100's 3,806 action classes make a Swin-B head of 3.9M, 4.4% of the
backbone), so counting it would make the same method look different per dataset. Both are logged:

- ``trainable_pct``: trainable parameters outside the task heads / backbone parameters (the papers');
- ``trainable_pct_with_head``: every trainable parameter / backbone parameters.

Task heads are the model's top-level children named in ``HEAD_MODULES`` (or a model's own
``head_modules`` attribute): ``head`` (classifier, one per dataset in multi-dataset models) and
``vc_head`` (M2-CLIP's visual classification head).
"""

from __future__ import annotations

from torch import nn

from components.model_kind import ModelKind

HEAD_MODULES = ("head", "vc_head")


def head_parameters(model: nn.Module) -> int:
    names = model.head_modules if isinstance(model, ModelKind) else HEAD_MODULES
    children = dict(model.named_children())
    return sum(p.numel() for n in names if n in children for p in children[n].parameters() if p.requires_grad)


def parameter_counts(model: nn.Module) -> dict[str, float]:
    """Trainable parameters, with and without the task heads, and their share of the frozen backbone."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = head_parameters(model)
    backbone = model.spec.total_params if isinstance(model, ModelKind) else sum(p.numel() for p in model.parameters())
    return {
        "trainable_params": trainable,
        "head_params": head,
        "backbone_params": backbone,
        "trainable_pct": 100.0 * (trainable - head) / max(backbone, 1),
        "trainable_pct_with_head": 100.0 * trainable / max(backbone, 1),
    }


def adapter_parameters(model: nn.Module) -> int:
    """Parameters of the injected adapters (``.adapters.`` in their names), trainable or frozen."""
    return sum(p.numel() for n, p in model.named_parameters() if ".adapters." in n)


def oversize_note(model: nn.Module) -> str:
    """One line when the adapters hold more parameters than the backbone they adapt ('' otherwise):
    widths given in channels for a large backbone are too large for a small one (a width ratio such
    as ``bottleneck: 0.125x`` scales with the backbone)."""
    adapters = adapter_parameters(model)
    backbone = parameter_counts(model)["backbone_params"]
    if adapters <= backbone:
        return ""
    return (f"the adapters hold {adapters:,} parameters, {100 * adapters / max(backbone, 1):.0f}% of the backbone's "
            f"{backbone:,}: more than the backbone itself (give widths as ratios of the block width, e.g. bottleneck: 0.125x)")
