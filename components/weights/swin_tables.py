"""Video Swin relative-position bias tables: the window a table was made for, and resizing to another.

A window (Wd, Wh, Ww) has a bias table of (2Wd-1)(2Wh-1)(2Ww-1) rows (relative offsets, d slowest,
w fastest) x heads, and a ``relative_position_index`` (V, V), V = Wd*Wh*Ww, that picks a row for each
pair of tokens. The row count alone does not tell the axes apart ((8, 7, 7) and (7, 7, 8) have the same
table), so the window is never guessed from it: the model's window is the attention module's own
``window_size``; the file's is the one window whose index equals the index stored beside the table
(torchvision, the Video Swin release and MMAction2 all save it). A file without a usable index (none,
or one no window makes): a table of the model's row count is the model's window; otherwise the one
window that differs from the model's along a single axis and has the table's row count, said in a
note; more than one, or none, is an error asking for ``window_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from components.weights.errors import WeightsError

Window = tuple[int, int, int]


def table_rows(window: Window) -> int:
    d, h, w = window
    return (2 * d - 1) * (2 * h - 1) * (2 * w - 1)


def relative_position_index(window: Window) -> torch.Tensor:
    """(V, V) index of a window's table, as torchvision / the Video Swin release compute it."""
    d, h, w = window
    # on the CPU even under torch.device("meta") (preflight builds the model there and still reads the file)
    coords = torch.stack(torch.meshgrid(*(torch.arange(n, device="cpu") for n in window), indexing="ij"))
    flat = rearrange(coords, "three d h w -> three (d h w)")
    rel = flat[:, :, None] - flat[:, None, :]  # 3 V V: offsets along d, h, w
    return (rel[0] + d - 1) * (2 * h - 1) * (2 * w - 1) + (rel[1] + h - 1) * (2 * w - 1) + (rel[2] + w - 1)


def _windows(volume: int, rows: int) -> list[Window]:
    """Every (d, h, w) with d*h*w = volume and a table of ``rows`` rows."""
    out = []
    for d in range(1, volume + 1):
        if volume % d:
            continue
        for h in range(1, volume // d + 1):
            if (volume // d) % h == 0 and table_rows((d, h, volume // d // h)) == rows:
                out.append((d, h, volume // d // h))
    return out


def window_of_index(index: torch.Tensor, rows: int) -> Window | None:
    """The window whose relative-position index is ``index`` (None when no window makes it)."""
    if index.dim() == 1:  # a flattened (V*V,) index
        side = int(round(index.numel() ** 0.5))
        index = index.reshape(side, side)
    if index.dim() != 2 or index.shape[0] != index.shape[1]:
        return None
    index = index.long().cpu()
    found = [w for w in _windows(index.shape[0], rows) if torch.equal(relative_position_index(w), index)]
    return found[0] if found else None


def file_window(key: str, rows: int, index_window: Window | None, model_window: Window, where: str
                ) -> tuple[Window, str]:
    """The window of the file's table ``key`` (and a note when it was not read off the stored index)."""
    if index_window is not None:
        return index_window, ""
    one_axis = [w for w in _windows_any(rows) if sum(a != b for a, b in zip(w, model_window)) == 1]
    if len(one_axis) != 1:
        raise WeightsError(f"{where}: {key} has {rows} rows (not the model's window {list(model_window)}) and the "
                           "file has no usable relative_position_index to tell its window by: set "
                           "model.backbone.kwargs.window_size to the window the file was trained with")
    return one_axis[0], (f"the file has no usable relative_position_index; its window {list(one_axis[0])} is the "
                         f"one with {rows} table rows that differs from the model's {list(model_window)} along one axis")


def _windows_any(rows: int) -> list[Window]:
    """Every window with a table of ``rows`` rows (any volume)."""
    odd = [n for n in range(1, rows + 1, 2) if rows % n == 0]
    return [((a + 1) // 2, (b + 1) // 2, (rows // a // b + 1) // 2)
            for a in odd for b in odd if (rows // a) % b == 0 and (rows // a // b) % 2 == 1]


def resize_table(table: torch.Tensor, old: Window, new: Window) -> torch.Tensor:
    """Trilinear resize of a ((2d-1)(2h-1)(2w-1), heads) table over its 3-D grid of offsets."""
    # (d h w) n -> 1 n d h w: the table as a 3-D grid of relative offsets per head
    grid = rearrange(table.float(), "(d h w) n -> 1 n d h w", d=2 * old[0] - 1, h=2 * old[1] - 1)
    grid = F.interpolate(grid, size=tuple(2 * s - 1 for s in new), mode="trilinear", align_corners=False)
    return rearrange(grid, "1 n d h w -> (d h w) n").to(table.dtype)


def resize_swin_tables(state: dict[str, torch.Tensor], model: nn.Module, where: str) -> list[str]:
    """Resize the file's tables to the windows of ``model``'s attention modules (in place); the
    position index is then the model's own (it is computed from the window, not learned)."""
    own = model.state_dict()
    done: dict[tuple, int] = {}
    extra: list[str] = []
    for key in [k for k in state if k.endswith("relative_position_bias_table")]:
        index_key = key.replace("relative_position_bias_table", "relative_position_index")
        if key not in own or index_key not in own:
            continue
        if own[key].shape[1] != state[key].shape[1]:
            continue  # another head count: a different size, which strict loading reports
        new = tuple(int(s) for s in model.get_submodule(key.rsplit(".", 1)[0]).window_size)
        index = state.get(index_key)
        read = window_of_index(index, state[key].shape[0]) if index is not None else None
        if own[key].shape == state[key].shape and read in (None, new):
            continue  # the model's window (a table of the same rows without a usable index is taken as such)
        old, note = file_window(key, state[key].shape[0], read, new, where)
        if note and note not in extra:
            extra.append(note)
        state[key] = resize_table(state[key], old, new)
        state[index_key] = own[index_key].clone()
        done[(old, new)] = done.get((old, new), 0) + 1
    return extra + [f"resized {n} relative-position table(s) from window {old} to {new}"
                    for (old, new), n in done.items()]
