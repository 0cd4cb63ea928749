"""`vidpeft ablate`: a campaign = datasets x variants x seeds, every cell a Tune trial (a `vidpeft train` run).

    name: cm3t-table1
    config: [../../pipelines/configs/demo.yaml]     # every cell starts from these (paths: relative to this file)
    set: [optim.epochs=30]                            # ... and these overrides
    metric: val_top1                                  # the table's metric (final epoch), mean +- std over seeds
    mode: max
    seeds: [0, 1, 2]
    datasets:                                         # columns of the table
      ek100: {config: [ek100.yaml], set: [data.manifest=/data/ek100/manifest.parquet], label: EK-100}
    variants:                                         # rows: presets (model sections)
      mhva_pt: {config: [../../pipelines/configs/presets/cm3t/mhva_pt.yaml], label: MHVA + PT}

Paper tables (tune_spaces/campaigns/cm3t_table*.yaml, m2clip_table*.yaml): a dataset may have its own
``metric``/``mode`` (Table 4: top-1, MSE, mAP), ``metrics`` adds columns (M2-CLIP Table 6: zero-shot
UCF101 beside K400), each variant carries the ``paper`` value it should reproduce, and
``references`` are the table's rows for other methods (shown with the paper's number, not run).

Profiles: ``--set profile=NAME`` picks ``profiles.NAME`` of the campaign, whose overrides swap what
a cell runs on without touching the rows: ``set`` for every cell, ``datasets.<key>`` per column
(e.g. a stand-in manifest) and ``backbones.<family>`` per backbone family of the cell (e.g. a tiny
Video Swin for every swin3d_b row, a tiny CLIP for every CLIP-B row); ``seeds`` replaces the seeds.
The shipped campaigns have a ``tiny`` profile over the synthetic stand-ins of `vidpeft standins`.

A cell's config layers: defaults < campaign config < variant config < dataset config < campaign set <
variant set < dataset set < profile set < profile dataset set < profile backbone set < `--set` < seed. Its key is a hash of that resolved config without output
paths, names and tracking: a cell whose folder holds metrics.json with its key is finished and never
runs again; a changed config is a new cell. An interrupted cell continues from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.config import ConfigError, cfg, from_dict, load_yaml, resolve, to_dict
from pipelines.runtime import tracking
from pipelines.config import ExperimentConfig
from pipelines.shipped import find
from pipelines.run.config_identity import config_identity
from pipelines.search.cell_deps import fill_cells, waves
from pipelines.data.eval_views import parse_views
from pipelines.search.campaign_views import check_views, evaluate_cells
from pipelines.search.report import LAYOUT  # noqa: F401  (the layout artifact `vidpeft report` reads)
from pipelines.search.tune import (CELL_KEY_TAG, TrialJob, absolute_paths, check_in_process,
                                   close_trial_runs, fit_concurrency, result_trial_id, reuse_trials, run_trials,
                                   search_alg, trial_cpus, trial_dirname)

# Not part of a cell's identity: where it writes and where it is tracked.
UNKEYED = ("name", "output_dir", "tracking", "scaling.ray_address", "scaling.storage_path")


@dataclass
class Source:
    config: list[str] = cfg([], "experiment YAMLs for this dataset/variant (relative to the campaign file)")
    set: list[str] = cfg([], "key=value overrides for this dataset/variant")
    label: str = cfg("", "name in the table; empty = the entry's key")
    metric: str = cfg("", "datasets: this column's metric (empty = the campaign's), e.g. val_mse for regression")
    mode: str = cfg("", "datasets: max or min for this column's metric (empty = the campaign's)")
    paper: dict[str, float] = cfg({}, "variants: the paper's value per dataset key (metric key: value for "
                                      "extra metrics, as '<dataset>:<metric>'), shown beside the measured one")


@dataclass
class Reference:
    label: str = cfg("", "the row's name in the paper's table")
    paper: dict[str, float] = cfg({}, "the paper's value per dataset key")
    note: str = cfg("another method, not run here", "why the row has no measurement")


@dataclass
class Profile:
    description: str = cfg("", "what this profile runs on")
    set: list[str] = cfg([], "key=value overrides for every cell")
    seeds: list[int] = cfg([], "seeds to run instead of the campaign's (empty = the campaign's)")
    datasets: dict[str, list[str]] = cfg({}, "dataset key -> overrides for that column's cells")
    backbones: dict[str, list[str]] = cfg({}, "backbone family -> overrides for the cells of that family")
    eval_views: str = cfg("", "test views for this profile's cells instead of the campaign's eval_views")


@dataclass
class Campaign:
    name: str = cfg("", "campaign name: MLflow parent run, `vidpeft report NAME`; empty = the file name")
    description: str = cfg("", "free text")
    config: list[str] = cfg([], "experiment YAMLs every cell starts from (relative to the campaign file)")
    set: list[str] = cfg([], "key=value overrides for every cell")
    metric: str = cfg("val_top1", "the table's metric (its final-epoch value), mean +- std over seeds")
    mode: str = cfg("max", "max or min: which way the metric is better")
    seeds: list[int] = cfg([0], "seeds every dataset x variant runs with")
    datasets: dict[str, Source] = cfg({}, "table columns: dataset name -> its configs/overrides")
    variants: dict[str, Source] = cfg({}, "table rows: variant (method preset) name -> its configs/overrides")
    max_concurrent: int = cfg(1, "cells at once (lowered to what the cluster holds)")
    metrics: list[str] = cfg([], "further metrics shown as columns per dataset (final value, mean +- std)")
    references: dict[str, Reference] = cfg({}, "the paper's rows for other methods (not run; shown with its numbers)")
    profiles: dict[str, Profile] = cfg({}, "named override sets, picked with --set profile=NAME (e.g. tiny)")
    eval_views: str = cfg("", "the papers' test protocol, CLIPSxCROPS (e.g. 4x3): each finished cell's best "
                              "checkpoint is evaluated with these views and the table shows them beside one "
                              "view (pipelines/search/campaign_views.py); empty = none")

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {self.mode!r}")
        for key, d in self.datasets.items():
            if d.mode not in ("", "max", "min"):
                raise ValueError(f"datasets.{key}.mode must be max or min, got {d.mode!r}")
        for key in ("seeds", "datasets", "variants"):
            if not getattr(self, key):
                raise ValueError(f"{key} is empty: the campaign has no cells")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        for spec in [self.eval_views, *(p.eval_views for p in self.profiles.values())]:
            if spec:
                parse_views(spec)


@dataclass
class Cell:
    dataset: str
    variant: str
    seed: int
    key: str
    data: dict = field(repr=False)  # the complete config a trial runs
    after: list[str] = field(default_factory=list)  # cells this one starts from ({cell:VARIANT}: cell_deps.py)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.variant}/seed={self.seed}"

    @property
    def output_dir(self) -> Path:
        return Path(self.data["output_dir"])

    def finished(self) -> bool:
        try:
            return json.loads((self.output_dir / "metrics.json").read_text()).get("cell_key") == self.key
        except (OSError, ValueError):
            return False


def load_campaign(path: str | Path) -> Campaign:
    try:
        camp = from_dict(Campaign, load_yaml(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    camp.name = camp.name or Path(path).stem
    return camp


def cell_key(data: dict) -> str:
    """Identity of a cell: its resolved config without the UNKEYED entries and without what equals
    the built-in defaults, so a config field added in a later version (at its default) leaves the
    keys of finished cells unchanged and they are not rerun."""
    data = config_identity(data)
    for dotted in UNKEYED:
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p, {})
        node.pop(last, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def pick_profile(camp: Campaign, campaign_file, overrides: list[str]) -> tuple[Profile | None, list[str]]:
    """``profile=NAME`` taken out of the overrides: (that profile, the other overrides)."""
    picked = [o for o in overrides if o.split("=", 1)[0].strip() == "profile"]
    rest = [o for o in overrides if o not in picked]
    if not picked:
        return None, rest
    name = picked[-1].split("=", 1)[1].strip()
    if name not in camp.profiles:
        raise ConfigError(f"{campaign_file}: no profile {name!r} (profiles: {sorted(camp.profiles) or 'none'})")
    return camp.profiles[name], rest


def expand(camp: Campaign, campaign_file: str | Path, overrides: list[str], camp_dir: Path) -> list[Cell]:
    """Every cell's resolved config, checked now: a bad key anywhere stops the campaign before it starts."""
    here = Path(campaign_file).absolute().parent
    profile, overrides = pick_profile(camp, campaign_file, list(overrides))

    def files(src) -> list[Path]:
        return [find("config", p, base=here) for p in src.config]  # relative to the campaign, or a shipped name

    cells = []
    folders: dict[tuple[str, int], dict[str, str]] = {}  # (dataset, seed) -> variant -> its cell's folder
    for v_name, variant in camp.variants.items():
        for d_name, dataset in camp.datasets.items():
            for seed in (profile.seeds if profile and profile.seeds else camp.seeds):
                where = f"{campaign_file}: cell {d_name}/{v_name}/seed={seed}"
                layers = files(camp) + files(variant) + files(dataset)
                earlier = folders.setdefault((d_name, seed), {})
                variant_set, named = fill_cells(list(variant.set), earlier, where)
                sets = [*camp.set, *variant_set, *dataset.set]
                try:
                    if profile is not None:
                        sets += [*profile.set, *profile.datasets.get(d_name, [])]
                        family = resolve(ExperimentConfig, layers, sets).model.backbone.family
                        sets += profile.backbones.get(family, [])
                    cfg = resolve(ExperimentConfig, layers, [*sets, *overrides, f"seed={seed}"])
                except ConfigError as e:
                    raise ConfigError(f"{where}: {e}") from None
                data = absolute_paths(to_dict(cfg))
                key = cell_key(data)
                # name and folder carry the key: on shared storage (scaling.storage_path) checkpoints go
                # under the name, so a changed cell never resumes from the old one's
                folder = slug(f"{d_name}__{v_name}__seed{seed}__{key[:8]}")
                data.update(name=f"{slug(camp.name)}__{folder}", output_dir=str(camp_dir / "cells" / folder))
                earlier[v_name] = data["output_dir"]
                cells.append(Cell(d_name, v_name, seed, key, data, after=[f"{d_name}/{v}/seed={seed}" for v in dict.fromkeys(named)]))
    return cells


def _layout(camp: Campaign, cells: list[Cell], eval_views: str = "") -> dict:
    return {
        "name": camp.name, "eval_views": eval_views, "metric": camp.metric, "mode": camp.mode, "seeds": sorted({c.seed for c in cells}),
        "metrics": list(camp.metrics),
        "datasets": [{"name": k, "label": s.label or k, "metric": s.metric or camp.metric, "mode": s.mode or camp.mode}
                     for k, s in camp.datasets.items()],
        "variants": [{"name": k, "label": s.label or k, "paper": dict(s.paper)} for k, s in camp.variants.items()],
        "references": [{"name": k, "label": r.label or k, "paper": dict(r.paper), "note": r.note}
                       for k, r in camp.references.items()],
        "cells": [{"dataset": c.dataset, "variant": c.variant, "seed": c.seed, "key": c.key} for c in cells],
    }


def _parent_run(uri: str, experiment: str, camp: Campaign, known: str) -> str:
    """The campaign's parent run: the one recorded in its folder if MLflow still has it, else a new one."""
    if known:
        try:
            tracking.client(uri).get_run(known)
            return tracking.start_run(uri, experiment, "", {}, run_id=known)
        except Exception:  # noqa: BLE001 - another tracking store, or the run was deleted
            pass
    params = {"campaign.metric": camp.metric, "campaign.seeds": str(camp.seeds),
              "campaign.datasets": ",".join(camp.datasets), "campaign.variants": ",".join(camp.variants)}
    return tracking.start_run(uri, experiment, f"campaign-{camp.name}", params,
                              tags={"vidpeft.kind": "campaign", "vidpeft.campaign": camp.name})


def check_cells(campaign_file, cells: list[Cell]) -> None:
    """Each cell still to run checked as `vidpeft train` checks its inputs (manifest, model, weights
    files), before Ray starts: one line naming every distinct problem and its cells."""
    from components.data.manifest import ManifestError
    from pipelines.run.inputs import check_inputs

    problems: dict[str, list[str]] = {}
    for c in cells:
        try:
            check_inputs(from_dict(ExperimentConfig, c.data))
        except (ConfigError, ManifestError, OSError) as e:
            problems.setdefault(str(e), []).append(c.name)
    if problems:
        def named(names: list[str]) -> str:
            return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        bad = sum(len(v) for v in problems.values())
        raise ConfigError(f"{campaign_file}: {bad} of {len(cells)} cells cannot start: "
                          + "; ".join(f"{why} (cells {named(names)})" for why, names in problems.items()))


def check_column_metrics(campaign_file: str, camp: Campaign, cells: list[Cell]) -> None:
    """Each column's metric is one its cells' train loop reports: a misspelt ``metric:`` would otherwise
    train every cell and leave the table empty. (``metrics:`` may name zero-shot results: not checked.)"""
    from pipelines.run.reported_metrics import check_reported

    seen = set()
    for c in cells:
        spec = camp.datasets[c.dataset]
        where = f"{campaign_file}: datasets.{c.dataset}.metric" if spec.metric else f"{campaign_file}: metric"
        metric = spec.metric or camp.metric
        if (c.dataset, c.variant, metric) not in seen:
            seen.add((c.dataset, c.variant, metric))
            check_reported(metric, from_dict(ExperimentConfig, c.data), where)


def run_campaign(campaign_file: str, overrides: list[str] = (), out: str = "", max_concurrent: int = 0) -> int:
    from ray import tune

    from pipelines.runtime.ray_env import ensure_ray
    from pipelines.search.report import build_report

    # 1) every cell resolved and keyed; finished ones set aside
    camp = load_campaign(campaign_file)
    camp_dir = Path(out or Path("runs") / f"campaign-{slug(camp.name)}").absolute()
    cells = expand(camp, campaign_file, list(overrides), camp_dir)
    trackings = {(c.data["tracking"]["tracking_uri"], c.data["tracking"]["experiment"], c.data["tracking"]["enabled"])
                 for c in cells}
    if len(trackings) > 1:
        raise ConfigError(f"{campaign_file}: all cells must log to one MLflow experiment, got {sorted(trackings)}")
    uri_cfg, experiment, enabled = trackings.pop()
    if not enabled:
        raise ConfigError(f"{campaign_file}: tracking.enabled is false, but a campaign's table is built from MLflow")
    check_column_metrics(campaign_file, camp, cells)
    if camp_dir.exists() and not camp_dir.is_dir():  # before the parent run and any cell: nothing left behind
        raise ConfigError(f"--out {out}: is a file; a campaign's folder is a directory (give a new or earlier one)")
    uri = tracking.resolve_tracking_uri(uri_cfg)
    todo = [c for c in cells if not c.finished()]
    stages = waves(todo, {c.name for c in cells} - {c.name for c in todo})
    check_cells(campaign_file, stages[0] if stages else [])  # later waves: when the cells they start from are done
    profile, _ = pick_profile(camp, campaign_file, list(overrides))
    eval_views = (profile.eval_views if profile is not None and profile.eval_views else "") or camp.eval_views
    if eval_views:
        check_views(campaign_file, cells, eval_views)
    print(f"[vidpeft] campaign {camp.name}: {len(cells)} cells, {len(cells) - len(todo)} finished earlier, "
          f"{len(todo)} to run", flush=True)

    # 2) the parent run (reused across invocations, so `vidpeft report` finds every cell under it)
    state_file = camp_dir / "campaign.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    parent = _parent_run(uri, experiment, camp, state.get("parent_run_id", ""))
    camp_dir.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri, "experiment": experiment}, indent=2))
    (camp_dir / LAYOUT).write_text(json.dumps(_layout(camp, cells, eval_views), indent=2))
    tracking.log_artifact(uri, parent, camp_dir / LAYOUT)
    tracking.log_artifact(uri, parent, campaign_file)

    # 3) the unfinished cells as Tune trials, in waves (a cell after the cells it starts from)
    failed: list[str] = []
    for n, todo in enumerate(stages):
        broken = {f.split(" ", 1)[0] for f in failed}
        blocked = [c for c in todo if set(c.after) & broken]
        failed += [f"{c.name} (not run: {', '.join(sorted(set(c.after) & broken))} failed)" for c in blocked]
        todo = [c for c in todo if c not in blocked]
        if not todo:
            continue
        if n:
            check_cells(campaign_file, todo)
        for c in todo:
            t = c.data["tracking"]
            t.update(tracking_uri=uri, parent_run_id=parent, run_name=c.name)
            t["tags"] = {**t["tags"], "vidpeft.campaign": camp.name, "vidpeft.dataset": c.dataset,
                         "vidpeft.variant": c.variant, "vidpeft.seed": str(c.seed), CELL_KEY_TAG: c.key}
        ensure_ray(todo[0].data["scaling"]["ray_address"])
        check_in_process([from_dict(ExperimentConfig, c.data) for c in todo], str(campaign_file))
        per_cell = max(trial_cpus(from_dict(ExperimentConfig, c.data)) for c in todo)
        concurrency = fit_concurrency(max_concurrent or camp.max_concurrent, per_cell)
        job = TrialJob(label=camp.name, trials_dir=str(camp_dir / "cells"), tracking_uri=uri, parent_run_id=parent,
                       cells={c.name: c.data for c in todo})
        # no metric here: columns may differ in metric (Table 4: top-1, MSE, mAP); the report picks them
        tune_config = tune.TuneConfig(num_samples=1, reuse_actors=reuse_trials(),
                                      search_alg=search_alg("random", 0, concurrency),
                                      trial_dirname_creator=trial_dirname)
        exp_dir = camp_dir / "tune" / (time.strftime("%Y%m%d-%H%M%S") + (f"-wave{n}" if n else ""))
        try:
            results, ended = run_trials(job, exp_dir, False, {"cell": tune.grid_search([c.name for c in todo])},
                                              tune_config)
        except BaseException:
            tracking.end_run(uri, parent, status="FAILED")
            raise
        close_trial_runs(uri, parent, results, ended)
        failed += [f"{r.config.get('cell')} ({result_trial_id(r)}): {r.error}" for r in results if r.error]
        if {result_trial_id(r) for r in results} - ended:
            tracking.end_run(uri, parent, status="KILLED")
            print(f"[vidpeft] campaign interrupted: run the same command again to continue ({camp_dir})")
            return 1

    # 4) the papers' test views on every finished cell's best checkpoint (once per cell)
    if eval_views:
        failed += evaluate_cells(cells, eval_views, uri)

    # 5) the table and plot, from MLflow (exactly what `vidpeft report` rebuilds)
    paths = build_report(uri, camp.name, camp_dir, experiment=experiment)
    for p in paths.values():
        tracking.log_artifact(uri, parent, p)
    tracking.end_run(uri, parent, status="FAILED" if failed else "FINISHED")
    print("\n" + Path(paths["markdown"]).read_text())
    print(f"report: {paths['markdown']}, {paths['csv']}, {paths['plot']}")
    if failed:
        print("[vidpeft] failed cells (rerun the command to retry them):\n  " + "\n  ".join(failed))
        return 1
    return 0
