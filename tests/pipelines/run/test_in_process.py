"""scaling.in_process: when a run trains in the driver's process (the e2e runs: test_train_e2e.py, both ways)."""

from __future__ import annotations

import pytest
import torch

from components.config import ConfigError, resolve
from pipelines.config import ExperimentConfig
from pipelines.run.in_process import gpu_mismatch


def test_the_gpu_choice_must_be_one_this_process_can_honour():
    """Ray Train's local mode puts the loop on this process's GPU whenever it sees one: a run asked to use
    none (or one this process lacks) keeps its Train workers."""
    cuda = torch.cuda.is_available()
    assert (gpu_mismatch(True) == "") == cuda
    assert (gpu_mismatch(False) == "") == (not cuda)
    assert "scaling.use_gpu" in gpu_mismatch(not cuda)


def test_in_process_takes_auto_true_or_false_and_one_worker_when_true():
    assert resolve(ExperimentConfig, [], []).scaling.in_process == "auto"
    assert resolve(ExperimentConfig, [], ["scaling.in_process=false"]).scaling.in_process is False
    assert resolve(ExperimentConfig, [], ["scaling.in_process=auto", "scaling.num_workers=2"]).scaling.num_workers == 2
    with pytest.raises(ConfigError, match="num_workers must be 1"):
        resolve(ExperimentConfig, [], ["scaling.in_process=true", "scaling.num_workers=2"])
    with pytest.raises(ConfigError, match="in_process"):
        resolve(ExperimentConfig, [], ["scaling.in_process=maybe"])
