"""scaling.in_process: when a run trains in the driver's process (the e2e runs: test_train_e2e.py, both ways)."""

from __future__ import annotations

import pytest
import torch

from components.config import ConfigError, resolve, to_dict
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


def test_a_trial_that_trains_in_its_own_process_reserves_the_workers_cpus(ray_session):
    """A search's trial stands in for its one Train worker: it holds that worker's CPUs, or the trials
    Tune starts side by side would oversubscribe the machine; a trial with Train workers holds next to none."""
    from pipelines.search.tune import TRIAL_CPU, TrialJob, trains_in_process

    def job(*overrides):
        data = to_dict(resolve(ExperimentConfig, [], ["scaling.cpus_per_worker=1.5", *overrides]))
        return TrialJob(label="t", trials_dir="/tmp/t", tracking_uri="", parent_run_id="", cells={"c": data})

    here = job().resources({"cell": "c"})
    assert trains_in_process(job().config_for({"cell": "c"}, "x"))
    assert here.required_resources == {"CPU": TRIAL_CPU + 1.5}
    for overrides in (["scaling.in_process=false"], ["scaling.num_workers=2"], ["scaling.max_failures=1"]):
        assert not trains_in_process(job(*overrides).config_for({"cell": "c"}, "x"))
        assert job(*overrides).resources({"cell": "c"}).required_resources == {"CPU": TRIAL_CPU}


def test_in_process_true_where_a_trial_cannot_is_refused_before_the_search(ray_session):
    from pipelines.search.tune import check_in_process

    check_in_process([resolve(ExperimentConfig, [], ["scaling.in_process=true"])], "space.yaml")
    with pytest.raises(ConfigError, match=r"^space.yaml: scaling.in_process: scaling.max_failures=2"):
        check_in_process([resolve(ExperimentConfig, [], ["scaling.in_process=true", "scaling.max_failures=2"])],
                         "space.yaml")


def test_trial_reuse_takes_1_or_0_and_names_the_variable_otherwise(monkeypatch):
    from pipelines.search.tune import REUSE_ENV, reuse_trials

    monkeypatch.delenv(REUSE_ENV, raising=False)
    assert reuse_trials() is True
    monkeypatch.setenv(REUSE_ENV, "0")
    assert reuse_trials() is False
    monkeypatch.setenv(REUSE_ENV, "off")
    with pytest.raises(ConfigError, match=r"^VIDPEFT_REUSE_TRIALS='off': expected 1"):
        reuse_trials()


@pytest.mark.parametrize("in_process,workers,local,here", [
    ("auto", 1, True, True),
    (True, 1, True, True),
    (False, 1, True, False),  # the run's config keeps the model in Ray
    ("auto", 2, True, False),  # several model workers: Ray's tasks / actor pool
    ("auto", 1, False, False),  # a cluster: the command's node may lack the run's resources
])
@pytest.mark.parametrize("use_gpu", [False, True])
def test_evaluate_and_predict_score_here_with_one_local_worker(in_process, workers, local, here, use_gpu):
    """pipelines/run/in_process.py: scores_here; a GPU the process sees and the run does not ask for (or the
    reverse) keeps the model in Ray too (on this machine: use_gpu true with no GPU)."""
    from types import SimpleNamespace

    from pipelines.run.in_process import scores_here

    expected = here and not gpu_mismatch(use_gpu)
    assert scores_here(SimpleNamespace(in_process=in_process), workers, local, use_gpu) is expected


@pytest.mark.parametrize("cpus,inside", [(1, 1), (2.5, 2), (0.5, 1)])
def test_threads_as_a_worker_sets_ray_s_count_and_puts_it_back(cpus, inside):
    """What the loop, evaluate and predict run under in the driver: Ray's OMP_NUM_THREADS for ``cpus`` CPUs
    (at least 1), and this process's own count back after, also when the block fails."""
    from pipelines.run.in_process import threads_as_a_worker

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with pytest.raises(RuntimeError), threads_as_a_worker(cpus):
            assert torch.get_num_threads() == inside
            raise RuntimeError("the block fails")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
