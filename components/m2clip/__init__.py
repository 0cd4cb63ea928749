"""M2-CLIP: multimodal adapters (TED, text adapter) and a multi-task decoder on frozen CLIP.

Importing this package registers the adapter types ``ted`` and ``text_adapter`` and the backbone
family ``openclip_vit``. The model kind ``m2clip`` is registered by ``components.m2clip.model``,
which ``components.model`` imports at its end (this package cannot import it eagerly:
``components.model`` imports ``M2ClipConfig`` from here while it is itself being imported).
"""

from components.adapters import ted  # noqa: F401  (registers adapter type "ted")
from components.backbones import openclip_vit  # noqa: F401  (registers backbone family "openclip_vit")
from components.m2clip.config import M2ClipConfig
from components.m2clip.prompts import ACTIONCLIP_TEMPLATES
from components.m2clip.text_adapter import TextAdapter, TextAdapterConfig

__all__ = ["ACTIONCLIP_TEMPLATES", "M2Clip", "M2ClipConfig", "TextAdapter", "TextAdapterConfig"]


def __getattr__(name: str):
    if name == "M2Clip":
        from components.m2clip.model import M2Clip

        return M2Clip
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
