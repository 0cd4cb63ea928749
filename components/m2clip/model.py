"""M2-CLIP (model kind ``m2clip``): frozen CLIP towers + TED/text adapters + a four-head decoder.

Video encoder: open_clip image tower per frame with ``model.adapters`` (TED before MHSA), ``v`` = mean
over T of the projected class tokens (Eq. 3). Text encoder: open_clip text tower with
``model.m2clip.text_adapters``. Decoder heads (each switchable, weighted; see ``M2ClipConfig``):
contrastive (KL, same-label pairs positive), CMC (cross-entropy on ``scale * cos(v, w_c)`` over all
classes), CMLM (``cmlm.py``) and VC (linear layer on ``v``). Only adapters and heads train, unless
``model.finetune: full``: then both towers train too, which with only the contrastive head on and
captions as class names is CLIP's own contrastive pretraining (the M2-CLIP demo's ``pretrain`` stage;
``export_backbone_state`` then writes both towers as an open_clip checkpoint).

Protocol: ``forward(batch) -> {"logits", "loss", "loss/<head>"...}`` with ``batch["video"]`` uint8
(B, T, H, W, C) and optional ``batch["target"]`` (B,) class indices. ``zero_shot_logits`` scores any
class names (Eq. 11); ``param_groups`` gives text adapters their own LR. Class-text embeddings are
cached while no gradient can flow into the text path (frozen text, or evaluation), keyed by the class
names, the templates and the text parameters' version counters (so an optimiser step or a weight load
invalidates them).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from components.adapters.base import ForwardContext
from components.adapters.inject import inject_adapters
from components.config import ConfigError
from components.m2clip.losses import (
    contrastive_kl_loss,
    cross_modal_classification_loss,
    cross_modal_logits,
    masked_lm_loss,
)
from components.m2clip.prompts import clip_tokenizer, mask_token_id, tokenize_prompts
from components.m2clip.text_adapter import TextAdapter
from components.m2clip.config import M2ClipModelConfig
from components.model_kind import ModelKind, prepare_adapters
from components.tasks import SingleLabel

_CACHE_SIZE = 4  # class-text matrices kept (training classes, eval templates, a zero-shot set, ...)


def cached(cache: dict, key: tuple, version: tuple, compute):
    """``cache[key]``'s tensor while its ``version`` (weights' in-place version counters, device) is
    unchanged, else ``compute()`` stored under it; at most ``_CACHE_SIZE`` entries, oldest dropped."""
    hit = cache.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    value = compute()
    if len(cache) >= _CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[key] = (version, value)
    return value


class M2Clip(ModelKind):
    batch_keys = ("video", "target")
    outputs = ("logits", "loss", "loss/<head>")
    head_modules = ("vc_head",)
    config_cls = M2ClipModelConfig
    zero_shot = True  # a text tower scores any class names (zero_shot_logits)

    def __init__(self, config: M2ClipModelConfig, num_outputs: int, class_names: list[str] | None = None) -> None:
        # open_clip's modules, imported here: a run of another model kind never loads open_clip
        from components.backbones.openclip_vit import OpenClipFrameViT, create_openclip
        from components.m2clip.cmlm import CrossModalMLM
        from components.m2clip.text import OpenClipTextTower

        super().__init__()
        mc = config.m2clip
        self._check(config, num_outputs, class_names)
        self.config = config
        self.task = SingleLabel(num_outputs)  # what its logits are scored as (its loss is its decoder's)
        self.class_names = list(class_names) if class_names is not None else [f"class {i}" for i in range(num_outputs)]
        self.templates = list(mc.templates)
        self.eval_templates = list(mc.eval_templates or mc.templates)

        # 1. Frozen towers (one open_clip model split in two) and CLIP's temperature.
        clip = create_openclip(config.backbone)
        last_text_block = copy.deepcopy(clip.transformer.resblocks[-1]) if mc.cmlm else None
        self.context = ForwardContext()  # visual adapters: clip length
        self.text_context = ForwardContext()
        self.backbone = OpenClipFrameViT(config.backbone, visual=clip.visual)
        self.text = OpenClipTextTower(clip)
        self.register_buffer("logit_scale", clip.logit_scale.detach().float().exp().reshape(()), persistent=False)
        self.requires_grad_(False)
        if config.finetune == "full":  # contrastive pretraining: both towers learn (the temperature stays)
            self.backbone.requires_grad_(True)
            self.text.requires_grad_(True)
        spec = self.backbone.spec
        self.init_normalisation(spec)
        self._spec = dataclasses.replace(spec, total_params=spec.total_params + self.text.spec.total_params)

        # 2. Adapters: model.adapters on the image tower, m2clip.text_adapters on the text tower.
        inject_adapters(self.backbone, spec, config.adapters, self.context)
        inject_adapters(self.text, self.text.spec, mc.text_adapters, self.text_context)
        prepare_adapters(self, [*config.adapters, *mc.text_adapters])  # sharing, init_from, trainable flags

        # 3. Prompts: token ids (K templates, C classes, L) and where the class-name tokens are.
        self.tokenizer = clip_tokenizer(config.backbone.name, self.text.context_length)
        ids, is_label = self._tokenize(self.class_names, self.templates)
        self.register_buffer("prompt_ids", ids, persistent=False)
        self.register_buffer("prompt_label_mask", is_label, persistent=False)

        # 4. Decoder heads with parameters: VC (linear on v) and CMLM.
        self.vc_head = None
        if mc.vc:
            self.vc_head = nn.Sequential(nn.Dropout(mc.vc_dropout), nn.Linear(spec.feature_dim, num_outputs))
        self.cmlm = None
        if mc.cmlm:
            if spec.feature_dim != self.text.width:
                raise ConfigError(
                    f"model.m2clip.cmlm: frame embeddings ({spec.feature_dim}) must match the text width "
                    f"({self.text.width}) for the copied text block's cross-attention"
                )
            if mc.cmlm_vocab == "labels":  # the tokens that spell class names, as the official label vocabulary
                vocab = torch.unique(ids[is_label])
            else:
                vocab = torch.arange(self.text.vocab_size)
            lookup = torch.full((self.text.vocab_size,), -100, dtype=torch.long)
            lookup[vocab] = torch.arange(len(vocab))
            self.register_buffer("mlm_lookup", lookup, persistent=False)  # token id -> MLM class
            self.mask_id = mask_token_id(self.tokenizer)
            self.cmlm = CrossModalMLM(last_text_block, mc.cmlm_adapter_width, len(vocab), ForwardContext())

        self._text_cache: dict[tuple, tuple[tuple, torch.Tensor]] = {}
        self._text_prefix_cache: dict[tuple, tuple[tuple, torch.Tensor]] = {}
        self.text_encode_calls = 0  # how often class texts went through the text tower (tests, profiling)

    @staticmethod
    def _check(config: M2ClipModelConfig, num_outputs: int, class_names: list[str] | None) -> None:
        mc = config.m2clip
        if config.backbone.family != "openclip_vit":
            raise ConfigError(f"model.backbone.family: m2clip needs openclip_vit, got {config.backbone.family!r}")
        if config.head.task != "single_label":
            raise ConfigError(f"model.head.task: m2clip is single-label classification, got {config.head.task!r}")
        if config.finetune not in ("adapters", "full"):
            raise ConfigError(f"model.finetune: m2clip trains adapters and heads (adapters) or both towers too "
                              f"(full, e.g. contrastive pretraining), got {config.finetune!r}")
        if config.backbone.pool == "grid":
            raise ConfigError("model.backbone.pool: m2clip compares frame embeddings with class texts: use cls or mean")
        if config.backbone.temporal != "mean":
            raise ConfigError("model.backbone.temporal: m2clip averages frame embeddings over time (Eq. 3): use mean")
        if config.modalities:
            raise ConfigError("model.modalities: m2clip uses no side modalities")
        uses_text = mc.contrastive or mc.cmc or mc.cmlm or mc.eval_head != "vc"
        if class_names is None and uses_text:
            raise ConfigError("m2clip needs the class names (from the manifest) for its text heads")
        if class_names is not None and len(class_names) != num_outputs:
            raise ConfigError(f"m2clip: {len(class_names)} class names for {num_outputs} outputs")

    @property
    def spec(self):
        """The image tower's spec; ``total_params`` counts both frozen towers (the "trainable %" base)."""
        return self._spec

    # ---- encoders -------------------------------------------------------------------------------

    def encode_video(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> per-frame embeddings (B, T, D) and the clip embedding v (B, D), both unnormalised."""
        x = self.normalise(video)
        self.context.set(num_frames=x.shape[1])
        frames = self.backbone.frame_features(x)
        return frames, frames.mean(dim=1)

    def _tokenize(self, names: list[str], templates: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [tokenize_prompts(self.tokenizer, t, names, self.text.context_length) for t in templates]
        ids, is_label = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])  # (K, C, 77) each
        used = self.text.used_length(ids)  # the padding after the longest prompt changes nothing: cut it
        return ids[..., :used], is_label[..., :used]  # (K, C, L) each

    def _encode_prompts(self, names: list[str], templates: list[str], chunk: int | None) -> torch.Tensor:
        """(K, C, D) L2-normalised embeddings of every template filled with every name."""
        self.text_encode_calls += 1
        if names == self.class_names and templates == self.templates:
            ids = self.prompt_ids
        else:
            ids = self._tokenize(names, templates)[0].to(self.prompt_ids.device)
        flat = rearrange(ids, "k c l -> (k c) l")
        if chunk:
            parts = [self.text(flat[i : i + chunk]) for i in range(0, len(flat), chunk)]
        else:  # with gradients: only the blocks from the first trainable one on run at every step
            start = self.text.frozen_prefix_length()
            hidden = self._frozen_text_prefix(names, templates, flat, start) if start else None
            parts = [self.text.project(self.text.encode_tokens(flat, start, hidden), flat)]
        feats = F.normalize(torch.cat(parts), dim=-1)
        return rearrange(feats, "(k c) d -> k c d", k=len(templates))

    def _frozen_text_prefix(self, names: list[str], templates: list[str], flat: torch.Tensor, stop: int) -> torch.Tensor:
        """The prompts' hidden states entering text block ``stop``, computed once per prompt set: every
        block before it is frozen, so each training step would recompute the same tensor (with many
        classes, most of the text tower's cost)."""
        frozen = [self.text.token_embedding.weight, self.text.positional_embedding,
                  *(p for b in self.text.transformer.resblocks[:stop] for p in b.parameters())]
        version = (tuple(p._version for p in frozen), flat.device)
        return cached(self._text_prefix_cache, (tuple(names), tuple(templates), stop), version,
                      lambda: self.text.frozen_prefix(flat, stop))

    def _text_version(self) -> tuple:
        return tuple(t._version for t in self.text.parameters())

    def class_text_features(self, names: list[str], templates: list[str]) -> torch.Tensor:
        """(K, C, D) normalised prompt embeddings; cached unless gradients can flow into the text path."""
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.text.parameters()):
            return self._encode_prompts(names, templates, chunk=None)
        version = (self._text_version(), self.logit_scale.device)

        def encode():
            with torch.no_grad():
                return self._encode_prompts(names, templates, chunk=self.config.m2clip.text_chunk)

        return cached(self._text_cache, (tuple(names), tuple(templates)), version, encode)

    def class_embeddings(self, names: list[str], templates: list[str]) -> torch.Tensor:
        """(C, D) class texts: each template's embedding normalised, averaged over templates, renormalised."""
        return F.normalize(self.class_text_features(names, templates).mean(dim=0), dim=-1)

    # ---- the protocol -------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mc = self.config.m2clip
        frames, v = self.encode_video(batch["video"])
        v_norm = F.normalize(v, dim=-1)
        target = batch.get("target")
        y = target.long() if target is not None else None
        templates = self.templates if self.training else self.eval_templates

        needs_text = mc.eval_head != "vc" or (y is not None and (mc.contrastive or mc.cmc))
        prompt_feats = self.class_text_features(self.class_names, templates) if needs_text else None
        class_text = F.normalize(prompt_feats.mean(dim=0), dim=-1) if needs_text else None
        xm_logits = cross_modal_logits(v_norm, class_text, self.logit_scale) if needs_text else None
        vc_logits = self.vc_head(v) if self.vc_head is not None else None

        if mc.eval_head == "vc":
            logits = vc_logits
        elif mc.eval_head == "xm":
            logits = xm_logits
        else:  # both: mean of the two heads' probabilities, as a log
            logits = ((vc_logits.softmax(-1) + xm_logits.softmax(-1)) / 2).log()
        out = {"logits": logits}
        if y is None:
            return out

        # Each sample's prompt template: drawn at random in training (ActionCLIP), the first otherwise.
        k = len(self.templates)
        which = torch.randint(k, y.shape, device=y.device) if self.training and k > 1 else torch.zeros_like(y)
        parts: dict[str, torch.Tensor] = {}
        if mc.contrastive:
            text = prompt_feats[which, y] if self.training else class_text[y]  # (B, D)
            parts["contrastive"] = contrastive_kl_loss(v_norm, text, y, self.logit_scale)
        if mc.cmc:
            parts["cmc"] = cross_modal_classification_loss(xm_logits, y)
        if mc.cmlm:
            parts["cmlm"] = self.cmlm_loss(frames, y, which)
        if mc.vc:
            parts["vc"] = F.cross_entropy(vc_logits, y)
        weights = {
            "contrastive": mc.contrastive_weight, "cmc": mc.cmc_weight, "cmlm": mc.cmlm_weight, "vc": mc.vc_weight
        }
        loss = v.new_zeros(())
        for name, value in parts.items():
            loss = loss + weights[name] * value
            out[f"loss/{name}"] = value.detach()
        out["loss"] = loss
        return out

    def cmlm_loss(self, frames: torch.Tensor, y: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """Mask class-name tokens of each sample's prompt, predict them from the prompt and its frames."""
        from components.m2clip.cmlm import mask_label_tokens

        mc = self.config.m2clip
        ids = self.prompt_ids[which, y]  # (B, L)
        masked_ids, masked = mask_label_tokens(
            ids, self.prompt_label_mask[which, y], mc.cmlm_mask_prob, mc.cmlm_at_least_one, self.mask_id
        )
        tokens = self.text.encode_tokens(masked_ids)  # (B, L, W) last text layer, masked prompt
        logits = self.cmlm(tokens, frames, self.text.ln_final, masked)  # (M, V)
        return masked_lm_loss(logits, self.mlm_lookup[ids[masked]])

    @torch.no_grad()
    def zero_shot_logits(
        self, video: torch.Tensor, class_names: list[str] | None = None, templates: list[str] | None = None
    ) -> torch.Tensor:
        """Eq. 11 for any class names: ``scale * cos(v, w_c)`` -> (B, C); templates default to eval_templates.

        ``video``: uint8 (B, T, H, W, C) (or already normalised float (B, T, C, H, W)).
        Class texts are encoded once per (names, templates) and reused across calls.
        """
        names = list(class_names) if class_names is not None else self.class_names
        templates = list(templates) if templates else self.eval_templates
        for t in templates:
            if t.count("{}") != 1:
                raise ValueError(f"template {t!r} must contain exactly one '{{}}'")
        _, v = self.encode_video(video)
        return cross_modal_logits(F.normalize(v, dim=-1), self.class_embeddings(names, templates), self.logit_scale)

    def param_groups(self, base_lr: float) -> list[dict]:
        """Trainable parameters in optimiser groups: text-side adapters at ``base_lr * text_lr_scale``.

        Text side = anything trainable in the text tower plus the CMLM block's text adapter (the
        official code's ``textad_`` parameters); everything else (TED, VC, MLM head) at ``base_lr``.
        """
        scale = self.config.m2clip.text_lr_scale
        text_side = {id(p) for p in self.text.parameters()}
        text_side |= {id(p) for m in self.modules() if isinstance(m, TextAdapter) for p in m.parameters()}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in text_side]
        text = [p for p in self.parameters() if p.requires_grad and id(p) in text_side]
        groups = []
        if main:
            groups.append({"name": "main", "params": main, "lr": base_lr, "lr_scale": 1.0})
        if text:
            groups.append({"name": "text", "params": text, "lr": base_lr * scale, "lr_scale": scale})
        return groups

    def load_transfer_weights(self, path: str) -> list[str]:
        """Load a trained run's encoders' trained part (visual + text), e.g. for zero-shot on other classes:
        the adapters, and under ``finetune: full`` the towers themselves.

        The VC and CMLM heads are sized by the training classes and are skipped; every such key of
        this model must be in the file. Returns the keys loaded.
        """
        from safetensors.torch import load_file

        state = load_file(str(path))
        own = self.state_dict()
        full = self.config.finetune == "full"
        wanted = sorted(k for k in own if k.startswith(("backbone.", "text.")) and (full or ".adapters." in k))
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ValueError(f"{path} lacks {len(missing)} encoder adapter tensor(s), e.g. {missing[:4]}")
        bad = [k for k in wanted if state[k].shape != own[k].shape]
        if bad:
            raise ValueError(f"{path}: shape mismatch for {bad[:4]}")
        self.load_state_dict({k: state[k] for k in wanted}, strict=False)
        return wanted

    def export_backbone_state(self) -> dict[str, torch.Tensor]:
        """Both towers in open_clip's own key layout (adapters unwrapped and dropped), with CLIP's
        ``logit_scale``: the file `vidpeft export --backbone-only` writes and a later run's
        ``model.backbone.checkpoint`` loads, like a downloaded open_clip checkpoint."""
        from components.adapters.unwrap import native_backbone_state

        state = native_backbone_state(self.backbone)  # visual.*
        state.update(native_backbone_state(self.text))  # token_embedding, transformer.*, ln_final, ...
        state["logit_scale"] = self.logit_scale.detach().log().reshape(()).cpu()
        return state
