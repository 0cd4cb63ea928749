"""Progress inside an epoch, verbosity switches, per-step and system metrics into MLflow (#16 items 2-3)."""

from __future__ import annotations

import io
import time

import pytest
import torch

from components.config import from_dict
from components.engine import TrainStep, run_pass, trainable_groups
from components.model import ModelConfig, build_model
from components.tasks import model_task
from pipelines.cli import build_parser, main
from pipelines.config import ExperimentConfig
from pipelines.run.progress import Progress
from pipelines.run.step_watch import StepWatch
from tests.conftest import TINY_VIT


def test_progress_lines_every_n_steps_carry_rate_loss_lr_eta_and_memory():
    out = io.StringIO()
    p = Progress("epoch 1/2", total=6, every_steps=2, every_seconds=0, stream=out)
    for i in range(6):
        p.update(4, loss=1.0 / (i + 1), lr=1e-3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # steps 2, 4, 6: each once
    assert lines[0].startswith("[vidpeft] epoch 1/2 | 2/6 | ")
    for part in ("clips/s", "loss 0.5000", "lr 0.001", "ETA ", "peak mem "):
        assert part in lines[0], (part, lines[0])
    assert "elapsed" in lines[-1] and "6/6" in lines[-1]


def test_a_live_bar_redraws_one_line_and_quiet_prints_nothing():
    out = io.StringIO()
    p = Progress("epoch 1/1", total=4, every_steps=1, every_seconds=0, live=True, stream=out)
    for _ in range(4):
        p.update(2, loss=0.1, lr=0.1)
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 4 and text.count("\n") == 1 and "[####################]" in text
    silent = io.StringIO()
    q = Progress("x", total=4, every_steps=1, stream=silent, enabled=False)
    for _ in range(4):
        q.update(1)
    assert silent.getvalue() == ""


def test_quiet_and_verbose_flags_reach_the_config_and_exclude_each_other(capsys):
    args = build_parser().parse_args(["train", "--quiet", "--set", "optim.epochs=1"])
    assert args.log_level == "quiet"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--quiet", "--verbose"])
    capsys.readouterr()
    cfg = from_dict(ExperimentConfig, {"log": {"level": "verbose"}})
    assert cfg.log.level == "verbose"
    with pytest.raises(Exception, match="level"):
        from_dict(ExperimentConfig, {"log": {"level": "loud"}})
    # the flag becomes the log.level override (a missing manifest then stops the run before Ray)
    assert main(["train", "--quiet"]) == 2
    assert "data.manifest" in capsys.readouterr().err


def tiny_run(tmp_path):
    torch.manual_seed(0)
    config = from_dict(ModelConfig, {"backbone": TINY_VIT, "head": {"num_outputs": 3},
                                     "adapters": [{"type": "bottleneck", "bottleneck": 4}]})
    model = build_model(config, 3)
    opt = torch.optim.SGD(trainable_groups(model, 0.1), lr=0.1)
    batches = [{"video": torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8),
                "target": torch.tensor([0, 1])} for _ in range(4)]
    return model, config, opt, batches


def test_per_step_metrics_go_to_mlflow_every_n_optimizer_steps(tmp_path, capsys):
    from pipelines.runtime import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = tracking.start_run(uri, "levers", "steps", {})
    model, config, opt, batches = tiny_run(tmp_path)
    step = TrainStep(model, opt)
    cfg = from_dict(ExperimentConfig, {"log": {"metrics_steps": 2, "progress_steps": 1, "progress_seconds": 0}})
    watch = StepWatch(cfg, "epoch 1/1", 4, step, "cpu", enabled=True, log=tracking.log_metrics, uri=uri,
                      run_id=run_id)
    run_pass(model, batches, model_task(config), step=step, on_batch=watch)
    watch.close()
    history = tracking.client(uri).get_metric_history(run_id, "step_train_loss")
    assert sorted(m.step for m in history) == [2, 4]
    assert len(tracking.client(uri).get_metric_history(run_id, "step_lr")) == 2
    assert capsys.readouterr().out.count("[vidpeft] epoch 1/1 |") == 4


def test_system_metrics_land_in_the_run(tmp_path):
    from pipelines.runtime import tracking
    from pipelines.runtime.system_metrics import SystemMetrics

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = tracking.start_run(uri, "levers", "system", {})
    with SystemMetrics(uri, run_id, seconds=0.2):
        deadline = time.monotonic() + 30  # wait for the sampler's first batch, however loaded the box
        client = tracking.client(uri)
        while time.monotonic() < deadline and not client.get_run(run_id).data.metrics:
            time.sleep(0.2)
    metrics = tracking.client(uri).get_run(run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics
    assert SystemMetrics(uri, run_id, enabled=False).monitor is None


def test_the_epoch_line_shows_what_changes_per_epoch_once():
    from pipelines.run.progress import epoch_line

    metrics = {"train_loss": 1.88541, "train_top1": 0.2708, "epoch": 1, "lr": 0.003, "clips_per_sec": 35.0791,
               "val_top1": 0.5625, "skipped_clips": 0, "skipped_clips_total": 0, "fallback_clips": 2,
               "fallback_clips_total": 2, "gflops": 0.0637, "trainable_pct": 57.3}
    line = epoch_line(1, 6, metrics)
    assert line == ("[vidpeft] epoch 2/6 | train_loss 1.885 | train_top1 0.2708 | val_top1 0.5625 | "
                    "fallback clips 2 | lr 0.003 | 35.1 clips/s")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_rank_zeros_progress_as_one_live_bar(ray_session):
    """Through the driver's board (a real Ray actor): bar posts redraw one line in place, an epoch line
    clears the bar and stays; a pipe gets no board (workers print plain lines)."""
    from pipelines.run.progress_relay import BAR, LINE, LiveRelay, board_poster

    @ray_session.remote(num_cpus=0)
    def rank0(name: str) -> None:  # stands in for a Train worker's rank 0
        post = board_poster(name)
        for step in (1, 2):
            post(BAR, f"[vidpeft] epoch 1/1 | {step}/2")
        post(LINE, "[vidpeft] epoch 1/1 | train_loss 1.0")
        post(BAR, "[vidpeft] epoch 2/2 | 1/2")

    screen = _Terminal()
    with LiveRelay(stream=screen, period=0.05) as relay:
        assert relay.name
        ray_session.get(rank0.remote(relay.name))
    text = screen.getvalue()
    assert "\r\x1b[2K[vidpeft] epoch 1/1 | 2/2" in text  # the newest bar was drawn in place
    assert "\r\x1b[2K[vidpeft] epoch 1/1 | train_loss 1.0\n" in text  # the bar cleared, the line kept
    assert text.endswith("[vidpeft] epoch 2/2 | 1/2\n")  # the last bar ended with its line
    assert text.count("train_loss") == 1

    piped = io.StringIO()
    with LiveRelay(stream=piped) as relay:
        assert relay.name is None and board_poster(relay.name) is None
    assert piped.getvalue() == ""
