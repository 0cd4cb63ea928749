"""A self-supervised stand-in for the recipe check (an experiment beside its verdict): the demo's small
ViT pretrained as MAE pretrains one (He et al. 2022; what VideoMAE does per clip), not by supervision.

CM3T's paper says AdaptFormer "fails with models not carefully pretrained using self-supervised methods"
(Sec. 2) and reaches "very poor performance ... without this specific pretraining" (Sec. 3). The check's
stand-in is pretrained with labels; this one asks whether the baselines train on the other kind.

MAE in short: 75% of each image's patches are dropped, the encoder sees the rest (with a fixed 2D
sin-cos position table), a light decoder fills the dropped ones in, and the loss is the pixel MSE on
the dropped patches (MAE's per-patch ``norm_pix_loss`` is an option, off here: ``mae_pretrain`` says why).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn


class MaeDecoder(nn.Module):
    """MAE's light decoder: the encoder's visible tokens plus a shared mask token at every dropped place,
    a fixed sin-cos position table, ``depth`` blocks and a linear map to each patch's pixels."""

    def __init__(self, dim: int, grid: tuple[int, int], patch_pixels: int, width: int = 64, depth: int = 1,
                 heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.mask_token, std=0.02)
        table = build_sincos2d_pos_embed(list(grid), width)  # (H*W, width)
        self.register_buffer("pos", torch.cat([torch.zeros(1, width), table])[None], persistent=False)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio=4.0) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.pred = nn.Linear(width, patch_pixels)

    def forward(self, encoded: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """encoded (B, 1 + kept, D) with the class token first; restore (B, N): each patch's index in
        [kept; dropped] order. -> (B, N, patch_pixels)."""
        x = self.embed(encoded)
        b, n = restore.shape
        masks = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], masks], dim=1)  # (B, N, W) in [kept; dropped] order
        patches = torch.gather(patches, 1, restore[..., None].expand(-1, -1, x.shape[-1]))  # original order
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos
        return self.pred(self.norm(self.blocks(x)))[:, 1:]


def mae_loss(vit: nn.Module, decoder: MaeDecoder, images: torch.Tensor, mask_ratio: float,
             generator: torch.Generator, norm_pix: bool = False) -> torch.Tensor:
    """images (B, C, H, W), normalised as the backbone takes them -> the MSE on the dropped patches."""
    p = vit.patch_embed.patch_size[0]
    target = rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    prefix = vit.num_prefix_tokens
    tokens = vit.patch_embed(images) + vit.pos_embed[:, prefix:]  # (B, N, D)
    b, n, d = tokens.shape
    keep = max(1, round(n * (1 - mask_ratio)))
    order = torch.rand(b, n, generator=generator).argsort(dim=1)  # a random permutation per image
    restore = order.argsort(dim=1)
    kept = torch.gather(tokens, 1, order[:, :keep, None].expand(-1, -1, d))
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(b, -1, -1)
    encoded = vit.norm(vit.blocks(torch.cat([cls, kept], dim=1)))
    pred = decoder(encoded, restore)
    dropped = (restore >= keep).float()  # (B, N): 1 where the patch was dropped
    return (((pred - target) ** 2).mean(-1) * dropped).sum() / dropped.sum()


def mae_pretrain(model: nn.Module, video: torch.Tensor, epochs: int, batch: int = 64, lr: float = 4e-3,
                 mask_ratio: float = 0.75, seed: int = 0, norm_pix: bool = False, say=print) -> float:
    """Pretrain ``model.backbone.vit`` (a vidpeft classifier's timm ViT) by MAE on the frames of ``video``
    (N, T, H, W, C) uint8; its position table is set to the fixed sin-cos and stays so. MAE's optimiser:
    AdamW (0.9, 0.95), weight decay 0.05, lr scaled by batch/256, 1/8 of the steps warm-up, cosine; its base
    lr 1.5e-4 is for ViT-B over 800 epochs, so a short run of the small ViT takes 4e-3 (vidpeft's choice).
    ``norm_pix`` is off by default: on the source frames (a shape on pixel noise) most patches are noise
    alone, and normalised per patch they cannot be predicted (the loss stayed at 0.98-0.99 of its start).
    Returns the last epoch's mean loss."""
    from benchmarks.recipe_check import sincos_position_embedding

    torch.manual_seed(seed)
    vit = model.backbone.vit
    sincos_position_embedding(model)
    vit.pos_embed.requires_grad_(False)
    decoder = MaeDecoder(vit.embed_dim, tuple(vit.patch_embed.grid_size), vit.patch_embed.patch_size[0] ** 2 * 3)
    params = [q for q in [*vit.parameters(), *decoder.parameters()] if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr * batch / 256, betas=(0.9, 0.95), weight_decay=0.05)
    frames = rearrange(video, "n t h w c -> (n t) h w c")  # MAE sees images: every frame on its own
    steps_per_epoch = math.ceil(len(frames) / batch)
    total, warm = epochs * steps_per_epoch, max(1, epochs * steps_per_epoch // 8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    g = torch.Generator().manual_seed(seed)
    vit.train()
    decoder.train()
    last = float("nan")
    for epoch in range(epochs):
        perm = torch.randperm(len(frames), generator=g)
        losses = []
        for start in range(0, len(frames), batch):
            x = model.normalise(frames[perm[start:start + batch]][:, None])[:, 0]  # (B, C, H, W)
            loss = mae_loss(vit, decoder, x, mask_ratio, g, norm_pix)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        last = sum(losses) / len(losses)
        if epoch == 0 or (epoch + 1) % max(1, epochs // 5) == 0:
            say(f"MAE pretraining: epoch {epoch + 1}/{epochs}, loss {last:.3f}")
    vit.pos_embed.requires_grad_(True)
    return last
