"""Typed, layered configuration: dataclass defaults < YAML file < `key=value` overrides.

Every config is a dataclass whose fields carry a help text (``cfg(default, "help")``).
``from_dict`` builds one from plain data and rejects unknown keys and wrong types with an
error that names the dotted key, so a typo in a YAML file or a ``--set`` never passes silently.
Polymorphic lists (adapters) pick their dataclass from a ``type`` key via a registry lookup.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted key."""


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's numbers and booleans. YAML 1.1 wants a dot in an exponent
    float, so ``lr: 3e-4`` (the way every lr is written) would be the string '3e-4'; and it reads
    on/off/yes/no as booleans, so ``amp: off`` would be False. Boolean fields still take yes/no/on/off
    (``_convert``)."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_WORD_BOOLS = {"yes": True, "on": True, "no": False, "off": False}


def yaml_load(text: str) -> Any:
    """``text`` as YAML, safely (no object tags), with YAML 1.2's exponent floats and booleans."""
    return yaml.load(text, Loader=YamlLoader)


def cfg(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None):
    """A dataclass field with a help text (shown by ``vidpeft explain``)."""
    meta = {"help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Polymorphic:
    """How a config base picks its concrete dataclass: ``resolver(data[key])`` (``default`` when absent;
    None = the key is required). ``variants()`` (optional) lists name -> class, so a key that only another
    variant has is reported as such, and ``explain`` shows every variant's own keys."""

    resolver: Callable[[str], type]
    key: str = "type"
    default: str | None = None
    variants: Callable[[], dict[str, type]] | None = None


# A hook for polymorphic configs: maps a declared base class to how its concrete class is picked.
_POLYMORPHIC: dict[type, Polymorphic] = {}


def register_polymorphic(base: type, resolver: Callable[[str], type], key: str = "type", default: str | None = None,
                         variants: Callable[[], dict[str, type]] | None = None) -> None:
    """Let configs declared as ``base`` (fields, list items) pick their dataclass by the ``key`` of their data."""
    _POLYMORPHIC[base] = Polymorphic(resolver, key, default, variants)


def _family(tp: type) -> tuple[type, Polymorphic] | None:
    return next(((base, p) for base, p in _POLYMORPHIC.items() if issubclass(tp, base)), None)


def _pick(tp: type, data: dict, prefix: str) -> type:
    """The concrete dataclass ``data`` asks for, when ``tp`` is a polymorphic base; else ``tp``."""
    poly = _POLYMORPHIC.get(tp)  # a variant named outright (from_dict(MhvaConfig, ...)) is built as is
    if poly is None:
        return tp
    where = f"{prefix}: " if prefix else ""
    name = data.get(poly.key, poly.default)
    if name is None:
        raise ConfigError(f"{where}missing {poly.key!r} (which {tp.__name__} to build)")
    key = f"{prefix + '.' if prefix else ''}{poly.key}"
    if not isinstance(name, str):
        raise ConfigError(f"{key}: expected a name, got {name!r}")
    try:
        return poly.resolver(name)
    except KeyError as e:
        raise ConfigError(f"{key}: {e.args[0]}") from None


def _other_variant_key(cls: type, name: str, value: Any, data: dict, prefix: str) -> str | None:
    """'model.m2clip.* is only for kind m2clip (...)' when ``name`` is a key of another variant of ``cls``."""
    family = _family(cls)
    if family is None or family[1].variants is None:
        return None
    poly = family[1]
    owners = [v for v, c in poly.variants().items()
              if c is not cls and name in {f.name for f in dataclasses.fields(c)}]
    if not owners:
        return None
    key = f"{prefix}.{name}" if prefix else name
    key += ".*" if isinstance(value, dict) else ""
    own = f"{prefix}.{poly.key}" if prefix else poly.key
    return f"{key} is only for {poly.key} {' / '.join(owners)} ({own} is {data.get(poly.key, poly.default)!r})"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:  # Literal["auto"] reads as 'auto'
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass  # the next type may take it; the error below names them all
        allowed = ", ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"{key}: {value!r} is none of: {allowed}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            hint = f" (one item is a list too: [{value}])" if isinstance(value, (str, int, float)) else ""
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}{hint}")
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = to_dict(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _WORD_BOOLS:  # YAML 1.1's words for them
            return _WORD_BOOLS[value.lower()]
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # a name like 2024
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls: type, data: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    A polymorphic base (``register_polymorphic``) builds the variant its data names."""
    data = dict(data or {})
    cls = _pick(cls, data, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    for name in unknown:
        elsewhere = _other_variant_key(cls, name, data[name], data, prefix)
        if elsewhere:
            raise ConfigError(elsewhere)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(where + k for k in unknown)}; "
            f"{cls.__name__} accepts: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}: {e}" if prefix else str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (lists, dicts, scalars) suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; ``update`` wins; lists are replaced, not merged."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def override_value(raw: str) -> Any:
    """A ``--set`` value: YAML (numbers, lists, mappings), except where YAML would not keep the text as
    typed: ``#`` after a space (a comment in YAML, text on a command line), ``|`` or ``>`` (block
    scalars: empty), and text YAML cannot parse (``,``): those are the text itself."""
    text = raw.strip()
    if not text or text.startswith("#") or " #" in text:
        return text
    try:
        value = yaml_load(text)
    except yaml.YAMLError:
        return text
    if value == "" and text[0] in "|>":
        return text
    return value


def apply_override(data: dict, assignment: str) -> dict:
    """Apply one ``a.b.0.c=value`` override (value parsed as YAML) to nested plain data."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    value = override_value(raw)
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key}: {where} is not a valid list index")
            node = node[int(part)]
        else:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {key}: {where} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {key}: {last} is not a valid list index")
        node[int(last)] = value
    else:
        node[last] = value
    return data


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with an error naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


# Two keys a config file may have besides its config's own: ``extends`` (a path, or a list of them,
# relative to the file: layers read before the file's own, e.g. a preset's shared recipe) and
# ``sources`` (dotted key -> where its value comes from: the provenance `vidpeft explain --preset`
# prints; not part of the config).
EXTENDS_KEY, SOURCES_KEY = "extends", "sources"


def file_layers(path: str | Path, _chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """A config file as (path, data) layers: what it ``extends`` first (recursively), then itself;
    each layer keeps its ``sources``, ``extends`` is taken out."""
    path = Path(path)
    real = path.resolve()
    if real in _chain:
        raise ConfigError(f"{path}: extends itself through {' -> '.join(str(p) for p in (*_chain, real))}")
    data = load_yaml(path)
    parents = data.pop(EXTENDS_KEY, None) or []
    parents = [parents] if isinstance(parents, str) else parents
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: {EXTENDS_KEY} must be a path or a list of paths, got {parents!r}")
    sources = data.get(SOURCES_KEY, {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise ConfigError(f"{path}: {SOURCES_KEY} must map dotted keys to text, got {sources!r}")
    layers = []
    for parent in parents:
        layers += file_layers(path.parent / parent, (*_chain, real))
    return layers + [(path, data)]


def config_layers(files: list[str | Path]) -> list[dict]:
    """The config data of ``files`` in order, each expanded by ``file_layers``, without ``sources``."""
    return [{k: v for k, v in data.items() if k != SOURCES_KEY} for f in files for _, data in file_layers(f)]


def resolve(cls: type, files: list[str | Path] = (), overrides: list[str] = (), base: dict | None = None) -> Any:
    """defaults < ``base`` < each YAML file in order (after the files it ``extends``) < each ``key=value`` override.

    Resolved at the end: a polymorphic section's defaults are those of the variant the merged layers
    name last (``--set model.kind=m2clip`` and ``--set model.m2clip.x=...`` work in either order)."""
    layers = ([base] if base else []) + config_layers(files)
    probe: dict = {}
    for layer in layers:
        probe = deep_merge(probe, layer)
    probe = copy.deepcopy(probe)
    for ov in overrides:  # only to learn which variants are asked for; the real pass below raises
        try:
            probe = apply_override(probe, ov)
        except ConfigError:
            pass
    data = _variant_defaults(cls(), probe)
    for layer in layers:
        data = deep_merge(data, layer)
    for ov in overrides:
        data = apply_override(data, ov)
    return from_dict(cls, data)


def _variant_defaults(obj: Any, probe: Any) -> dict:
    """``to_dict(obj)``, with each polymorphic section's defaults those of the variant ``probe`` names."""
    hints = typing.get_type_hints(type(obj))
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            sub = probe.get(f.name) if isinstance(probe, dict) else None
            sub = sub if isinstance(sub, dict) else {}
            try:
                chosen = _pick(hints[f.name], sub, f.name)
            except ConfigError:  # an unknown variant: from_dict reports it with the whole key
                chosen = type(value)
            if chosen is not type(value):
                value = chosen()
            out[f.name] = _variant_defaults(value, sub)
        else:
            out[f.name] = to_dict(value)
    return out


def explain(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field, recursing into nested configs."""
    rows = []
    instance = cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(explain(type(value), prefix=f"{key}."))
            rows.extend(_variant_rows(hints[f.name], type(value), f"{key}."))
        else:
            rows.append((key, repr(value), f.metadata.get("help", "")))
    return rows


def _variant_rows(declared: Any, built: type, prefix: str) -> list[tuple[str, str, str]]:
    """The keys only other variants of a polymorphic section have, their help saying which variant."""
    family = _family(declared) if isinstance(declared, type) else None
    if family is None or family[1].variants is None:
        return []
    poly, own = family[1], {f.name for f in dataclasses.fields(built)}
    rows = []
    for name, variant in poly.variants().items():
        fields = [f for f in dataclasses.fields(variant) if f.name not in own]
        for key, default, text in explain(variant, prefix=prefix):
            if any(key == f"{prefix}{f.name}" or key.startswith(f"{prefix}{f.name}.") for f in fields):
                rows.append((key, default, f"({poly.key} {name}) {text}"))
    return rows


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
