"""`vidpeft submit [options] -- COMMAND ...`: run a vidpeft command as a Ray job (see pipelines/runtime/submit.py)."""

from __future__ import annotations

import argparse


def cmd_submit(args) -> int:
    from pipelines.runtime.submit import SubmitRequest, submit

    req = SubmitRequest(entrypoint=args.entrypoint, address=args.address,
                        working_dir=None if args.no_working_dir else args.working_dir,
                        runtime_env_file=args.runtime_env, env=args.env, submission_id=args.submission_id,
                        no_wait=args.no_wait)
    return submit(req, dry_run=args.dry_run)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "submit", help="run a vidpeft command as a Ray job on a cluster (wraps `ray job submit`)",
        description="Example: vidpeft submit --address http://127.0.0.1:8265 -- vidpeft train --config "
                    "demo --set data.manifest=/shared/data/manifest.parquet")
    p.add_argument("--address", default="",
                   help="the cluster's dashboard, e.g. http://127.0.0.1:8265 (default: RAY_API_SERVER_ADDRESS, "
                        "RAY_ADDRESS, then http://127.0.0.1:8265)")
    p.add_argument("--working-dir", default=".",
                   help="directory shipped to the cluster and run in (default: the current one, the project checkout)")
    p.add_argument("--no-working-dir", action="store_true",
                   help="ship no code: the cluster's image already holds the project")
    p.add_argument("--runtime-env", default="", metavar="FILE",
                   help="runtime_env YAML (default: WORKING_DIR/deploy/runtime_env.yaml if present)")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="also set this variable in the job (repeatable); MLFLOW_TRACKING_URI and "
                        "VIDPEFT_STORAGE_PATH are forwarded whenever set")
    p.add_argument("--submission-id", default="", help="job id to use (default: Ray makes one)")
    p.add_argument("--no-wait", action="store_true", help="return after submitting instead of streaming the logs")
    p.add_argument("--dry-run", action="store_true", help="print the `ray job submit` command only")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- then the command to run on the cluster")
    p.set_defaults(fn=cmd_submit)
