"""`vidpeft train`: one training run of an experiment config on Ray Train."""

from __future__ import annotations

from pipelines.cli.args import add_config_args, load_experiment
from pipelines.runtime.phase_log import mark


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train adapters on a manifest with Ray Train")
    add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the output dir's last checkpoint")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pipelines.runtime.ray_env import attach_early

    early = attach_early()  # a warm local Ray: its worker processes start while this one imports
    from pipelines.run.run_place import check_resumed_copy
    from pipelines.run.train import output_dir, run_train

    cfg = load_experiment(args.config, args.overrides)
    mark("config_loaded")
    if early and cfg.scaling.ray_address and cfg.scaling.ray_address != early:
        import ray

        ray.shutdown()  # the config names another instance: the run joins that one
    check_resumed_copy(args.config, output_dir(cfg))
    run_train(cfg, resume=args.resume)
    return 0
