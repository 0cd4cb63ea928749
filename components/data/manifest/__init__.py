"""Clip manifest contract: one Parquet row per clip, validated on write and on load.

Schema (see `CORE_COLUMNS` / `OPTIONAL_COLUMNS`):
  clip_id str (required, unique) | video_path str (required; absolute or relative to
  the manifest's directory) | start_frame,end_frame int64? | start_sec,end_sec float64? |
  split str (required, train/val/test) | dataset str (required) | label int64? |
  multi_label list<int64>? (optional column) | regression list<float32>? (optional column) |
  feature columns list<float32>? (any name, declared in metadata `feature_dims`; a column listed
  in `feature_tokens` holds M tokens of D = feature_dims[col] floats, flattened token-major).
Schema metadata key `vidpeft` holds the class names, feature widths and the like.

The parts: ``schema.py`` (columns, metadata, ``Manifest``, ``ManifestError``), ``checks.py`` (type
coercion and the vectorised row checks), ``io.py`` (``write_manifest`` / ``read_manifest``).
"""

from components.data.manifest.checks import validate_table
from components.data.manifest.io import read_manifest, rebase_video_paths, write_manifest
from components.data.manifest.schema import (
    CORE_COLUMNS,
    FEATURE_TYPE,
    MANIFEST_VERSION,
    METADATA_KEY,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SPLITS,
    Manifest,
    ManifestError,
)

__all__ = [
    "CORE_COLUMNS", "FEATURE_TYPE", "MANIFEST_VERSION", "METADATA_KEY", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS",
    "SPLITS", "Manifest", "ManifestError", "read_manifest", "rebase_video_paths", "validate_table", "write_manifest",
]
