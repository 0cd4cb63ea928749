"""open_clip's text tower as a module of its own: ids (N, L) -> final-layer tokens -> joint-space embeddings.

Same computation as ``CLIP.encode_text`` (token + position embeddings, causal transformer, ``ln_final``,
pooling at EOT, projection), split in two so the CMLM head can read the final-layer tokens (Eq. 12's
``z^(L)``). Its blocks carry the ``pre_attn``/``pre_mlp`` residual taps, so text adapters are injected
with the same machinery and site names as the visual tower (spec: ``describe_openclip_text``).
"""

from __future__ import annotations

import torch
from open_clip.transformer import text_global_pool
from torch import nn

from components.backbones.openclip_vit import describe_openclip_text


class OpenClipTextTower(nn.Module):
    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection  # nn.Parameter (W, D), nn.Linear or None
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)  # causal, or None
        self.pool_type = clip.text_pool_type
        self.eos_id = getattr(clip, "text_eos_id", None)
        self.context_length = clip.context_length
        self.vocab_size = clip.vocab_size
        self.width = self.transformer.width
        self.output_dim = self._output_dim()
        total = sum(p.numel() for p in self.parameters())
        self.spec = describe_openclip_text(self.transformer, prefix="", feature_dim=self.output_dim, total_params=total)

    def _output_dim(self) -> int:
        if self.text_projection is None:
            return self.width
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection.out_features
        return self.text_projection.shape[1]

    def encode_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N, L, W) outputs of the last text block (before ``ln_final``)."""
        n = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        mask = self.attn_mask[:n, :n] if self.attn_mask is not None else None
        return self.transformer(x, attn_mask=mask)

    def project(self, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(N, L, W) final-layer tokens -> (N, D) embeddings (EOT token, ``ln_final``, projection)."""
        x = text_global_pool(self.ln_final(tokens), ids, self.pool_type, eos_token_id=self.eos_id)
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.encode_tokens(ids), ids)
