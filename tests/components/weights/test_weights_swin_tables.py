"""Video Swin bias tables are resized along the right axes: each window pair against a trilinear
reference computed here on the (2Wd-1, 2Wh-1, 2Ww-1, heads) grid (issue #30)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components.weights.reader import WeightsError
from components.weights.strict import capture_notes
from components.weights.swin_tables import relative_position_index, window_of_index
from tests.components.weights.test_weights_formats import SWIN, build

TABLE = "features.0.0.attn.relative_position_bias_table"


def swin_spec(window) -> dict:
    return {**SWIN, "kwargs": {**SWIN["kwargs"], "window_size": list(window)}}


def reference(table: torch.Tensor, old, new) -> torch.Tensor:
    """The table as a (2d-1, 2h-1, 2w-1, heads) grid, resized trilinearly, back to rows."""
    grid = table.reshape(*(2 * s - 1 for s in old), table.shape[1]).permute(3, 0, 1, 2)[None]
    out = F.interpolate(grid, size=tuple(2 * s - 1 for s in new), mode="trilinear", align_corners=False)
    return out[0].permute(1, 2, 3, 0).reshape(-1, table.shape[1])


PAIRS = [((8, 7, 7), (16, 7, 7)), ((8, 7, 7), (4, 7, 7)), ((2, 7, 7), (8, 7, 7)), ((16, 7, 7), (8, 7, 7)),
         ((7, 7, 8), (8, 7, 7)), ((2, 3, 5), (5, 3, 2)), ((3, 5, 2), (2, 3, 5)), ((2, 4, 4), (4, 2, 4))]


@pytest.mark.parametrize("old,new", PAIRS, ids=[f"{o}->{n}" for o, n in PAIRS])
def test_swin_tables_resized_like_trilinear_reference(tmp_path, old, new):
    torch.manual_seed(0)
    state = build(swin_spec(old)).swin.state_dict()
    torch.save(state, tmp_path / "w.pth")
    with capture_notes() as notes:
        model = build(swin_spec(new), tmp_path / "w.pth")
    assert f"resized 3 relative-position table(s) from window {old} to {new}" in notes
    for key in [k for k in state if k.endswith("relative_position_bias_table")]:
        got = model.swin.state_dict()[key]
        want = reference(state[key], old, new)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-6), (key, (got - want).abs().max())


def test_window_read_off_the_stored_index_for_every_axis_order():
    for window in [(8, 7, 7), (7, 8, 7), (7, 7, 8), (2, 3, 5), (5, 3, 2), (3, 2, 5)]:
        rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        assert window_of_index(relative_position_index(window), rows) == window
        assert window_of_index(relative_position_index(window).flatten(), rows) == window


def test_file_without_index_takes_the_window_differing_along_one_axis(tmp_path):
    torch.manual_seed(1)
    state = build(swin_spec((16, 7, 7))).swin.state_dict()
    torch.save({k: v for k, v in state.items() if not k.endswith("relative_position_index")}, tmp_path / "w.pth")
    with capture_notes() as notes:
        model = build(swin_spec((8, 7, 7)), tmp_path / "w.pth")
    assert any("no usable relative_position_index; its window [16, 7, 7]" in n for n in notes)
    assert torch.allclose(model.swin.state_dict()[TABLE], reference(state[TABLE], (16, 7, 7), (8, 7, 7)), atol=1e-6)


def test_file_without_index_and_an_ambiguous_window_is_refused(tmp_path):
    torch.manual_seed(2)
    state = build(swin_spec((2, 3, 5))).swin.state_dict()  # (3, 5, 2), (5, 2, 3), ... differ in 2+ axes from (4, 4, 4)
    torch.save({k: v for k, v in state.items() if not k.endswith("relative_position_index")}, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=r"w\.pth: .*relative_position_bias_table has 135 rows .* set "
                                           r"model\.backbone\.kwargs\.window_size"):
        build(swin_spec((4, 4, 4)), tmp_path / "w.pth")


def test_tables_read_and_resized_while_the_model_is_built_on_meta(tmp_path):
    """preflight builds the model on the meta device with the checkpoint: reading the windows must work there."""
    torch.manual_seed(3)
    torch.save(build(swin_spec((8, 7, 7))).swin.state_dict(), tmp_path / "w.pth")
    for window in [(8, 7, 7), (16, 7, 7)]:
        with torch.device("meta"), capture_notes() as notes:
            build(swin_spec(window), tmp_path / "w.pth")
        assert any("from window (8, 7, 7) to (16, 7, 7)" in n for n in notes) == (window == (16, 7, 7))
