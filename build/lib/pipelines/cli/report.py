"""`vidpeft report`: rebuild a campaign's table and plot from MLflow alone; see pipelines/search/report.py."""

from __future__ import annotations

from pathlib import Path


def cmd_report(args) -> int:
    from pipelines.runtime import tracking
    from pipelines.search.report import build_report

    name = args.campaign
    if Path(name).is_file():  # a campaign YAML: only its name is read
        from pipelines.search.campaign import load_campaign

        name = load_campaign(name).name
    from pipelines.search.campaign import slug

    out = args.out or str(Path("runs") / f"campaign-{slug(name)}")
    paths = build_report(tracking.resolve_tracking_uri(args.tracking_uri), name, out, experiment=args.experiment)
    print(Path(paths["markdown"]).read_text())
    print(f"report: {paths['markdown']}, {paths['csv']}, {paths['plot']}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="rebuild a campaign's table (Markdown, CSV) and plot (PNG) from MLflow")
    p.add_argument("campaign", help="campaign name, or its YAML file")
    p.add_argument("--tracking-uri", default="", help="MLflow store; default MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db")
    p.add_argument("--experiment", default="", help="MLflow experiment to look in (default: all)")
    p.add_argument("--out", default="", metavar="DIR", help="where report.{md,csv,png} go (default runs/campaign-<name>)")
    p.set_defaults(fn=cmd_report)
