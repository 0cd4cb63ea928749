"""The packed-target contract between the data pipeline and a multi-dataset model.

Ray Data gives every column of a batch one dtype and shape, but datasets of different tasks have
different targets (a class index, a multi-hot vector, regression values, each of its own width).
So every clip carries ``target`` float32 (W,) with W = the widest head, plus ``dataset_index`` (its
head). Row layout by task: single_label = the class index in column 0 (exact in float32 below 2**24);
multi_label = the multi-hot vector in columns [0, K); regression = the values in columns [0, K).
The rest is zero. ``pack_*`` builds it on the driver (numpy), ``unpack_target`` reads it (torch).
"""

from __future__ import annotations

import numpy as np
import torch


def pack_single_label(labels: np.ndarray, width: int) -> np.ndarray:
    """(N,) class indices -> (N, width) float32 with the index in column 0."""
    out = np.zeros((len(labels), width), dtype=np.float32)
    out[:, 0] = labels
    return out


def pack_multi_label(row_of_value: np.ndarray, values: np.ndarray, rows: int, width: int) -> np.ndarray:
    """Positive class ``values[j]`` of row ``row_of_value[j]`` (a flattened list column) -> multi-hot."""
    out = np.zeros((rows, width), dtype=np.float32)
    out[row_of_value, values] = 1.0
    return out


def pack_regression(values: np.ndarray, width: int) -> np.ndarray:
    """(N, K) targets -> (N, width) float32, zero-padded."""
    out = np.zeros((values.shape[0], width), dtype=np.float32)
    out[:, : values.shape[1]] = values
    return out


def unpack_target(target: torch.Tensor, task: str, width: int) -> torch.Tensor:
    """Packed (B, W) rows of one head -> what ``components.tasks`` expects for ``task``."""
    if task == "single_label":
        return target[:, 0].round().long()
    return target[:, :width].float()
