"""M2-CLIP settings (``model.m2clip``): text-side adapters, prompts, and the multi-task decoder.

``M2ClipModelConfig`` is kind m2clip's model config: the shared ``ModelConfig`` plus ``m2clip``.

The visual adapters (TED) are the usual ``model.adapters`` list; the backbone is ``model.backbone``
with ``family: openclip_vit``. Loss = contrastive_weight * (KL_v2t + KL_t2v) / 2 + cmc_weight * CE_cmc
+ cmlm_weight * CE_mlm + vc_weight * CE_vc over the enabled heads. The defaults reproduce the official
code's weighting, ((KL_v + KL_t)/2 + CE_cmc)/2 + CE_vc + MLM/10, with CE_cmc on logits (the official
code applies it to softmaxed scores, a bug).
"""

from __future__ import annotations

from dataclasses import dataclass

from components.adapters.base import AdapterConfig
from components.config import cfg
from components.model_config import ModelConfig

EVAL_HEADS = ("vc", "xm", "both")
MLM_VOCABS = ("labels", "full")


@dataclass
class M2ClipConfig:
    text_adapters: list[AdapterConfig] = cfg(
        [],
        "adapters injected into the text tower, e.g. {type: text_adapter, layers: [-1]} (paper's best); "
        "empty = frozen text tower",
    )
    text_lr_scale: float = cfg(0.5, "LR multiplier of text-side adapters (text tower + CMLM block); official: lr/2")
    templates: list[str] = cfg(
        ["a video of {}"],
        "training prompts; one is drawn per sample for the contrastive loss, all are averaged for the class texts",
    )
    eval_templates: list[str] = cfg([], "prompts averaged at evaluation and zero-shot; empty = templates")
    contrastive: bool = cfg(True, "video-text contrastive head (ActionCLIP KL loss, same-label pairs positive)")
    contrastive_weight: float = cfg(0.5, "weight of (KL_v2t + KL_t2v) / 2")
    cmc: bool = cfg(True, "cross-modal classification head: cross-entropy on scaled cosine logits vs all classes")
    cmc_weight: float = cfg(0.5, "weight of the CMC cross-entropy")
    cmlm: bool = cfg(True, "cross-modal masked LM head: class-name tokens masked, predicted from text + frames")
    cmlm_weight: float = cfg(0.1, "weight of the CMLM cross-entropy")
    cmlm_mask_prob: float = cfg(0.2, "probability of masking each class-name token of a sample's prompt")
    cmlm_at_least_one: bool = cfg(True, "mask one random class-name token where none was drawn (if mask_prob > 0)")
    cmlm_adapter_width: int = cfg(384, "bottleneck of the text adapter inside the CMLM block")
    cmlm_vocab: str = cfg("labels", "MLM vocabulary: labels (tokens of the class names, as official) or full")
    vc: bool = cfg(True, "visual classification head: linear layer on the video embedding, cross-entropy")
    vc_weight: float = cfg(1.0, "weight of the VC cross-entropy")
    vc_dropout: float = cfg(0.5, "dropout before the VC linear layer (official: 0.5)")
    eval_head: str = cfg(
        "vc", "what `logits` holds: vc (VC head), xm (cosine vs class texts, Eq. 11) or both (log of mean softmax)"
    )
    text_chunk: int = cfg(256, "prompts per text-tower call when class texts are encoded without gradients")

    def __post_init__(self) -> None:
        if self.eval_head not in EVAL_HEADS:
            raise ValueError(f"eval_head must be one of {EVAL_HEADS}, got {self.eval_head!r}")
        if self.eval_head in ("vc", "both") and not self.vc:
            raise ValueError(f"eval_head={self.eval_head} needs the VC head: set vc: true or eval_head: xm")
        if self.cmlm_vocab not in MLM_VOCABS:
            raise ValueError(f"cmlm_vocab must be one of {MLM_VOCABS}, got {self.cmlm_vocab!r}")
        if not 0.0 <= self.cmlm_mask_prob <= 1.0:
            raise ValueError(f"cmlm_mask_prob must be in [0, 1], got {self.cmlm_mask_prob}")
        if not 0.0 <= self.vc_dropout < 1.0:
            raise ValueError(f"vc_dropout must be in [0, 1), got {self.vc_dropout}")
        for name in ("contrastive_weight", "cmc_weight", "cmlm_weight", "vc_weight", "text_lr_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.cmlm_adapter_width <= 0 or self.text_chunk <= 0:
            raise ValueError("cmlm_adapter_width and text_chunk must be positive")
        if not self.templates:
            raise ValueError("templates: give at least one prompt template")
        for t in [*self.templates, *self.eval_templates]:
            if t.count("{}") != 1:
                raise ValueError(f"template {t!r} must contain exactly one '{{}}' (where the class name goes)")


@dataclass
class M2ClipModelConfig(ModelConfig):
    kind: str = cfg("m2clip", "model kind (this config: m2clip)")
    m2clip: M2ClipConfig = cfg(factory=M2ClipConfig, help="M2-CLIP text adapters, prompts and decoder heads")
