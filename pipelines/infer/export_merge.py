"""A trained model with its mergeable adapters folded into the frozen weights (`vidpeft export --merge`).

Which adapters merge is each type's own declaration (``components.adapters.registry``). The merged
model comes with the config that rebuilds it: the merged adapters removed from ``model.adapters`` (and,
for M2-CLIP, ``model.m2clip.text_adapters``), so the exported file loads as a plain frozen backbone +
the adapters that could not merge + the head, with the frozen model's parameter count and FLOPs.
"""

from __future__ import annotations

from dataclasses import replace

from components.adapters.merge import merge_adapters, unmergeable
from components.config import ConfigError
from pipelines.infer.trained import Trained, build_trained


def adapter_configs(model_cfg) -> list:
    """Every adapter the model config injects: the image tower's and, for M2-CLIP, the text tower's."""
    text = getattr(getattr(model_cfg, "m2clip", None), "text_adapters", [])
    return [*model_cfg.adapters, *text]


def without_adapters(model_cfg, keys: set[str]):
    """The model config minus the adapters named ``keys`` (merged into the weights)."""
    out = replace(model_cfg, adapters=[a for a in model_cfg.adapters if a.key not in keys])
    m2clip = getattr(model_cfg, "m2clip", None)
    if m2clip is not None:
        out = replace(out, m2clip=replace(m2clip, text_adapters=[a for a in m2clip.text_adapters if a.key not in keys]))
    return out


def merge_report(t: Trained, merged: bool = False) -> list[str]:
    """One line per adapter: merged / mergeable, or kept as a module and the type's reason."""
    refusals = {line.split(":")[0]: line for line in unmergeable(adapter_configs(t.cfg.model))}
    lines = []
    for a in adapter_configs(t.cfg.model):
        name = a.type if a.key == a.type else f"{a.type} ({a.key})"
        if name in refusals:
            lines.append(f"{name}: kept as a module, {refusals[name].split(': ', 1)[1]}")
        else:
            lines.append(f"{name}: " + ("merged into the frozen weights" if merged else "mergeable (export --merge)"))
    return lines


def build_merged(t: Trained, require_all: bool = True, device: str = "cpu"):
    """(model with mergeable adapters folded in, eval mode; the Trained that rebuilds it; report lines).

    ``require_all``: refuse (ConfigError, every unmergeable adapter and its reason) unless all merge."""
    refusals = unmergeable(adapter_configs(t.cfg.model))
    if require_all and refusals:
        raise ConfigError("--merge: " + "; ".join(refusals) + " (export without --merge keeps adapters as modules)")
    model = build_trained(t, device)
    keys = set(merge_adapters(model, adapter_configs(t.cfg.model)))
    cfg = replace(t.cfg, model=without_adapters(t.cfg.model, keys))
    return model.eval(), replace(t, cfg=cfg), merge_report(t, merged=True)
