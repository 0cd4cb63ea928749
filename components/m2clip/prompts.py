"""Class prompts -> CLIP token ids, with a mask of which tokens spell the class name.

``"a video of {}"`` is tokenized piecewise as ``[SOT] + enc("a video of") + enc(name) + enc("") + [EOT]``
so the class-name tokens (what CMLM masks) are known exactly; for templates where the name is its
own word this equals open_clip's tokenizer on the whole string. Too-long prompts are cut like
open_clip does (last kept token replaced by EOT). Works offline: open_clip ships its BPE vocabulary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from components.config import ConfigError

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

# ActionCLIP's 16 prompt templates (averaged at test time in ActionCLIP); usable as eval_templates.
ACTIONCLIP_TEMPLATES = [
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
]

MASK_WORD = "mask"  # CLIP's vocabulary has no [MASK]; like the official code, masked tokens become "mask"


def clip_tokenizer(model_name: str, context_length: int) -> SimpleTokenizer:
    import open_clip  # here, not at import: reading an M2-CLIP config needs no open_clip
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)
    if not isinstance(tokenizer, SimpleTokenizer):
        raise ConfigError(
            f"model.backbone.name: {model_name!r} uses {type(tokenizer).__name__}; m2clip needs CLIP's BPE tokenizer"
        )
    return tokenizer


def tokenize_prompts(
    tokenizer: SimpleTokenizer, template: str, names: list[str], context_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``template`` filled with each name -> ids (C, L) long and label mask (C, L) bool (class-name tokens)."""
    prefix, suffix = template.split("{}")
    pre, post = tokenizer.encode(prefix), tokenizer.encode(suffix)
    ids = torch.zeros(len(names), context_length, dtype=torch.long)
    is_label = torch.zeros(len(names), context_length, dtype=torch.bool)
    for i, name in enumerate(names):
        label = tokenizer.encode(name)
        tokens = [tokenizer.sot_token_id, *pre, *label, *post, tokenizer.eot_token_id]
        flags = [False] * (1 + len(pre)) + [True] * len(label) + [False] * (len(post) + 1)
        if len(tokens) > context_length:
            tokens, flags = tokens[:context_length], flags[:context_length]
            tokens[-1], flags[-1] = tokenizer.eot_token_id, False
        ids[i, : len(tokens)] = torch.tensor(tokens)
        is_label[i, : len(flags)] = torch.tensor(flags)
    return ids, is_label


def mask_token_id(tokenizer: SimpleTokenizer) -> int:
    return tokenizer.encode(MASK_WORD)[0]
