"""The named sizes of each backbone family, as data: what a family builds and what a file is matched against.

The backbones build from these tables and ``identify`` reads a file's architecture back against
them, so both import this leaf module and neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

# torchvision's swin3d_t/s/b constructor arguments (torchvision.models.video.swin3d_*).
VIDEO_SWIN_SIZES: dict[str, dict] = {
    "swin3d_t": dict(patch_size=[2, 4, 4], embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                     window_size=[8, 7, 7], stochastic_depth_prob=0.1),
    "swin3d_s": dict(patch_size=[2, 4, 4], embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
                     window_size=[8, 7, 7], stochastic_depth_prob=0.1),
    "swin3d_b": dict(patch_size=[2, 4, 4], embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                     window_size=[8, 7, 7], stochastic_depth_prob=0.1),
}

# VideoMAE ViT sizes (the settings every size shares are the backbone's DEFAULTS).
VIDEOMAE_SIZES: dict[str, dict] = {
    "videomae_small": dict(embed_dim=384, depth=12, num_heads=6),
    "videomae_base": dict(embed_dim=768, depth=12, num_heads=12),
    "videomae_large": dict(embed_dim=1024, depth=24, num_heads=16),
    "videomae_huge": dict(embed_dim=1280, depth=32, num_heads=16),
}

# open_clip architecture JSONs of the tiny test models (e.g. "vidpeft-tiny-clip"), beside the family
OPENCLIP_CONFIG_DIR = Path(__file__).resolve().parents[1] / "backbones" / "openclip_configs"
_openclip_added = False


def add_openclip_test_archs() -> None:
    """Make open_clip know the tiny test architectures (once per process)."""
    global _openclip_added
    if not _openclip_added:
        import open_clip

        open_clip.add_model_config(OPENCLIP_CONFIG_DIR)
        _openclip_added = True
