"""The driver decodes each row's target (ingest.decoded_targets), so decoder actors never import the task code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from components.tasks import make_task
from pipelines.data.ingest import TARGET, ClipDecoder, DecodeSettings, decoded_targets

CASES = {
    "single_label": pa.table({"label": pa.array([2, 0, 3], pa.int64())}),
    "multi_label": pa.table({"multi_label": pa.array([[0, 2], [1], []], pa.list_(pa.int64()))}),
    "regression": pa.table({"regression": pa.array([[0.5, 1.0], [0.0, -1.0], [2.0, 3.0]], pa.list_(pa.float32()))}),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_decoded_targets_are_what_the_task_decodes(kind):
    table = CASES[kind]
    task = make_task(kind, 4 if kind != "regression" else 2)
    settings = DecodeSettings(num_frames=2, size=8, sampling="segment", stride=1, training=False, seed=0,
                              task=kind, num_outputs=task.num_outputs)
    with_targets = decoded_targets(table, settings)
    expected = np.stack([task.decode(v) for v in table[task.column].to_pylist()])
    # as a decoder actor receives the column in a numpy batch, and as it stacks it
    got = ClipDecoder(settings)._targets({TARGET: with_targets[TARGET].to_numpy(zero_copy_only=False)})
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    # without the column (a direct call), the decoder decodes the task's column itself: the same
    direct = ClipDecoder(settings)._targets({task.column: table[task.column].to_numpy(zero_copy_only=False)})
    np.testing.assert_array_equal(direct, expected)


def test_the_decoder_module_does_not_import_torch():
    code = "import sys, pipelines.data.ingest; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
