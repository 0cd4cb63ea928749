"""M2-CLIP: multimodal adapters (TED, text adapter) and a multi-task decoder on frozen CLIP.

Importing this package registers the adapter types ``ted`` and ``text_adapter`` (the backbone family
``openclip_vit`` is registered by ``components.backbones``, open_clip imported when a model is built). The model kind ``m2clip`` is registered by ``components.m2clip.model``,
which ``components.model`` imports (the model is imported lazily here: it is heavy, and the
config alone is enough to read an M2-CLIP config).
"""

from components.adapters import ted  # noqa: F401  (registers adapter type "ted")
from components.m2clip.config import M2ClipConfig, M2ClipModelConfig
from components.m2clip.prompts import ACTIONCLIP_TEMPLATES
from components.m2clip.text_adapter import TextAdapter, TextAdapterConfig

__all__ = ["ACTIONCLIP_TEMPLATES", "M2Clip", "M2ClipConfig", "M2ClipModelConfig", "TextAdapter", "TextAdapterConfig"]


def __getattr__(name: str):
    if name == "M2Clip":
        from components.m2clip.model import M2Clip

        return M2Clip
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
