"""Campaign cell keys: what makes a finished cell count as finished."""

from __future__ import annotations

import json

from components.config import to_dict
from pipelines.campaign import cell_key
from pipelines.config import ExperimentConfig


def test_cell_key_ignores_fields_at_their_default():
    """A config field added later (present at its default) must not change finished cells' keys."""
    base = to_dict(ExperimentConfig())
    base["data"]["manifest"] = "a.parquet"
    older = json.loads(json.dumps(base))
    del older["data"]["eval_clips"]  # as written by a version without the field
    assert cell_key(base) == cell_key(older)
    changed = json.loads(json.dumps(base))
    changed["data"]["eval_clips"] = 2
    assert cell_key(changed) != cell_key(base)
