"""Converters from native dataset annotations to the clip manifest (pure Python + pyarrow).

One file per format, each registering itself: importing this package registers them all.
`convert(format, annotations, videos, out, missing="error"|"skip", options={...})` writes a
validated manifest and returns a `ConvertReport`.
"""

from components.data.converters.base import (AnnotationFile, ConverterError, ConvertReport,
                                             VideoFinder, build_manifest)
from components.data.converters.registry import convert, formats, get_format, register_format
from components.data.converters import epic_kitchens  # noqa: F401  (registers "epic-kitchens-100")
from components.data.converters import kinetics  # noqa: F401  (registers "kinetics")
from components.data.converters import ssv2  # noqa: F401  (registers "ssv2")
from components.data.converters import ucf101  # noqa: F401  (registers "ucf101")
from components.data.converters import hmdb51  # noqa: F401  (registers "hmdb51")
from components.data.converters import mpii_group_interaction  # noqa: F401  (registers "mpii-group-interaction")
from components.data.converters import udiva  # noqa: F401  (registers "udiva")
from components.data.converters import generic_csv  # noqa: F401  (registers "csv")

__all__ = ["AnnotationFile", "ConvertReport", "ConverterError", "VideoFinder", "build_manifest",
           "convert", "formats", "get_format", "register_format"]
