"""How tokens are arranged at a transformer block: what a backbone describes and adapters read.

Its own module so that backbones (which describe their blocks) and adapters (which regroup tokens by
space or time) both import it and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenLayout:
    """How tokens are arranged at a site, so adapters can regroup them by space or time.

    ``frames``: (B*T, P + H*W, C) per-frame tokens with P prefix (class) tokens.
    ``swin``: (B, T', H', W', C) channels-last grids, attention over windows of ``window``.
    ``sequence``: (B, N, C) tokens with no spatial meaning (text towers).
    """

    kind: str = "frames"
    grid: tuple[int, int] = (0, 0)
    num_prefix_tokens: int = 0
    window: tuple[int, int, int] = (0, 0, 0)
