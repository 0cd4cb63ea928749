"""Search spaces as data: a YAML of dotted config keys -> distributions, mapped to ``ray.tune`` domains.

    metric: val_top1          # what the search optimises (a per-epoch metric of the train loop)
    mode: max
    params:
      optim.lr: {type: loguniform, lower: 1.0e-4, upper: 3.0e-3}
      model.adapters.0.bottleneck: {type: choice, values: [16, 32, 64]}
      model.adapters.1.prefix_length: {type: randint, lower: 4, upper: 33}   # upper excluded
      seed: {type: grid, values: [0, 1]}                                      # every value, every sample

Every key is checked against the experiment config a search starts from (its ``--config`` files):
each candidate value (choice/grid values, range bounds) is set into that config and resolved with
``components.config.resolve``, so an unknown key, an adapter index the config lacks, or a value of the
wrong type stops the search before any trial starts, naming the file and the key.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace, dataclass
from pathlib import Path
from typing import Any

from components.config import ConfigError, cfg, from_dict, load_yaml, resolve

KINDS = ("choice", "grid", "uniform", "loguniform", "randint")


@dataclass
class ParamSpec:
    type: str = cfg("choice", f"distribution: one of {', '.join(KINDS)}")
    values: list[Any] = cfg([], "choice/grid: the candidate values (any YAML value, lists included)")
    lower: Any = cfg(None, "uniform/loguniform/randint: lower bound (inclusive)")
    upper: Any = cfg(None, "uniform/loguniform: upper bound; randint: upper bound (excluded)")

    def __post_init__(self) -> None:
        if self.type not in KINDS:
            raise ValueError(f"type must be one of {KINDS}, got {self.type!r}")
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"{self.type} needs a non-empty 'values' list")
            if self.lower is not None or self.upper is not None:
                raise ValueError(f"{self.type} takes 'values', not lower/upper")
            return
        if self.values:
            raise ValueError(f"{self.type} takes lower/upper, not 'values'")
        number = int if self.type == "randint" else (int, float)
        for name in ("lower", "upper"):
            v = getattr(self, name)
            if not isinstance(v, number) or isinstance(v, bool):
                kind = "an integer" if number is int else "a number"
                raise ValueError(f"{self.type} needs {kind} for '{name}', got {v!r}")
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        if self.type == "loguniform" and self.lower <= 0:
            raise ValueError(f"loguniform needs lower > 0, got {self.lower}")

    def candidates(self) -> list[Any]:
        """Values that stand for the whole range when the space is checked against the config."""
        if self.type in ("choice", "grid"):
            return list(self.values)
        if self.type == "randint":
            return [self.lower, self.upper - 1]
        return [float(self.lower), float(self.upper)]


@dataclass
class SearchSpace:
    description: str = cfg("", "what this space explores (free text)")
    metric: str = cfg("val_top1", "metric the search optimises (reported every epoch by the train loop)")
    mode: str = cfg("max", "max or min")
    params: dict[str, ParamSpec] = cfg({}, "dotted config key -> distribution")

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {self.mode!r}")
        if not self.params:
            raise ValueError("params is empty: nothing to search")

    @property
    def has_grid(self) -> bool:
        return any(p.type == "grid" for p in self.params.values())

    def encoded(self) -> set[str]:
        """Keys whose choices include lists/mappings: Tune sees them as JSON strings (searchers such as
        Optuna only take scalars as categories); ``decode`` turns them back into values."""
        return {k for k, p in self.params.items()
                if p.type in ("choice", "grid") and any(isinstance(v, (list, dict)) for v in p.values)}

    def to_tune(self) -> dict[str, Any]:
        """``param_space`` for ``ray.tune.Tuner``: one flat entry per dotted key."""
        from ray import tune

        encoded = self.encoded()
        space: dict[str, Any] = {}
        for key, p in self.params.items():
            values = [json.dumps(v) for v in p.values] if key in encoded else p.values
            if p.type == "choice":
                space[key] = tune.choice(values)
            elif p.type == "grid":
                space[key] = tune.grid_search(values)
            elif p.type == "uniform":
                space[key] = tune.uniform(p.lower, p.upper)
            elif p.type == "loguniform":
                space[key] = tune.loguniform(p.lower, p.upper)
            else:
                space[key] = tune.randint(p.lower, p.upper)
        return space

    def decode(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """A trial's sampled config -> {dotted key: config value} (only this space's keys)."""
        encoded = self.encoded()
        return {k: json.loads(sampled[k]) if k in encoded else sampled[k] for k in self.params if k in sampled}


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space YAML (unknown top-level or per-parameter keys raise)."""
    try:
        return from_dict(SearchSpace, load_yaml(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def set_dotted(data: dict, key: str, value: Any) -> dict:
    """Set ``a.b.0.c`` in nested plain data to a Python value (lists by index; a missing section is
    created so that the schema check reports the unknown key by name)."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{key}: {where} is not an index of a list of {len(node)} item(s)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{key}: {'.'.join(parts[:i])} is a value, not a section")
    return data


def apply_params(base: dict, params: dict[str, Any]) -> dict:
    """A copy of ``base`` (plain config data) with each dotted key set."""
    data = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(data, key, value)
    return data


def validate(space: SearchSpace, base: dict, where: str = "search space") -> None:
    """Resolve the config once per candidate value of every key: fails on the first bad key/value."""
    from pipelines.config import ExperimentConfig

    for key, p in space.params.items():
        for value in p.candidates():
            try:
                resolve(ExperimentConfig, base=apply_params(base, {key: value}))
            except ConfigError as e:
                raise ConfigError(f"{where}: params.{key} = {value!r} does not fit the experiment config: {e}") from None


def check_space_models(space: SearchSpace, base: dict, where: str = "search space",
                       class_names: list[str] | None = None, num_outputs: int | None = None) -> None:
    """Every candidate value of a model.* key builds a model (shapes only, on the meta device): a refused
    kwarg or a bad adapter in the space is one line here, not a trial's traceback after Ray started."""
    from pipelines.config import ExperimentConfig
    from pipelines.run.preflight import check_model

    for key, p in space.params.items():
        if not key.startswith("model."):
            continue
        for value in p.candidates():
            cfg = resolve(ExperimentConfig, base=apply_params(base, {key: value}))
            model = cfg.model
            bare = replace(model, backbone=replace(model.backbone, checkpoint=None))
            try:
                check_model(replace(cfg, model=bare), class_names, num_outputs)
            except ConfigError as e:
                raise ConfigError(f"{where}: params.{key} = {value!r}: {e}") from None
