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

    def encode_tokens(self, ids: torch.Tensor, start: int = 0, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) token ids -> (N, L, W) outputs of the last text block (before ``ln_final``).

        ``hidden`` (N, L, W), the input of block ``start`` computed earlier (``frozen_prefix``), skips
        the embeddings and blocks before ``start``."""
        x = hidden if hidden is not None else self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        return self.run_blocks(x, start, len(self.transformer.resblocks))

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """(N, L, W) -> (N, L, W) through blocks [start, stop), as open_clip's Transformer runs them."""
        n = x.shape[1]
        mask = self.attn_mask[:n, :n] if self.attn_mask is not None else None
        batch_first = getattr(self.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)  # N L W -> L N W
        for block in self.transformer.resblocks[start:stop]:
            x = block(x, attn_mask=mask)
        return x if batch_first else x.transpose(0, 1)  # L N W -> N L W

    def frozen_prefix_length(self) -> int:
        """How many leading blocks (with the embeddings) nothing trains in and nothing randomises:
        their output for a fixed prompt is a constant, so it can be computed once (without
        gradients) and reused at every training step. 0 when the embeddings train or dropout is on."""
        if self.token_embedding.weight.requires_grad or self.positional_embedding.requires_grad:
            return 0
        count = 0
        for block in self.transformer.resblocks:
            random = any((isinstance(m, nn.Dropout) and m.p > 0) or (isinstance(m, nn.MultiheadAttention) and m.dropout > 0)
                         for m in block.modules())
            if random or any(p.requires_grad for p in block.parameters()):
                break
            count += 1
        return count

    def frozen_prefix(self, ids: torch.Tensor, stop: int) -> torch.Tensor:
        """(N, L, W) input of block ``stop``: embeddings and blocks [0, stop), no gradients."""
        with torch.no_grad():
            x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
            return self.run_blocks(x, 0, stop)

    def project(self, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(N, L, W) final-layer tokens -> (N, D) embeddings (EOT token, ``ln_final``, projection)."""
        x = text_global_pool(self.ln_final(tokens), ids, self.pool_type, eos_token_id=self.eos_id)
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def used_length(self, ids: torch.Tensor) -> int:
        """How many leading positions of (..., L) padded ids can change the embeddings: up to the last
        EOT. Behind a causal mask, padding after a prompt's EOT never reaches the EOT token, so prompts
        padded to CLIP's 77 tokens run at their real length (~10 for class prompts) with identical
        outputs. Without a causal mask, or with a pooling that reads the last position, all of L."""
        if self.attn_mask is None or self.pool_type not in ("argmax", "eos"):
            return ids.shape[-1]
        used = (ids != 0).flatten(0, -2).any(dim=0).nonzero()  # 0 = the tokenizer's padding id
        return int(used.max()) + 1 if len(used) else 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.encode_tokens(ids), ids)
