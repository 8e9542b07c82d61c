"""One config grammar: YAML files read into typed dataclass sections.

Every config of the project (schedules, model configs, LM and encoder pretraining) is a tree of
dataclasses whose fields carry the types and the defaults, written once. :func:`parse` checks a
mapping against such a class and converts it; any unknown key at any depth, any wrong type and any
value outside a field's range is a :class:`~partlib.common.ConfigError` naming the file, the key
path and what is expected::

    conf/schedule_part.yaml: stages[1].optim.lr_rate: unknown key (known: type, lr, weight_decay, betas, eps, momentum)

Field types understood: ``int``, ``float`` (an int, or a string such as ``3e-3``, which YAML 1.1
reads as text), ``bool``, ``str``, ``Literal[...]``, ``Optional[X]``, ``Union[...]``,
``List[X]``, ``Tuple[X, ...]``, ``Dict[str, X]``, ``Any``, nested dataclasses (``key: null`` for
a field with a default that is not Optional means that default), and classes with a
``config_check(value, path) -> value`` static method for grammars of their own (e.g. layer
specs). Field metadata ``{"min": m}`` / ``{"gt": m}`` bound numbers; a dataclass's
``validate(self)`` checks rules across its fields, raising :class:`Invalid`.

Files may inherit: ``base: <file>`` or ``base: [<file>, ...]`` (relative to the file that names
them) are read first and the file merged onto them by :func:`merge` (mappings merge key by key,
lists replace, except lists of mappings with a ``name`` key, which merge entry by entry by name:
the base's order is kept, new names are appended, and no entry of the base can be dropped).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Type, TypeVar, Union

import yaml

from partlib.common import ConfigError, PathLike

T = TypeVar("T")


class Invalid(Exception):
    """A config value is wrong; ``path`` is the key path (``stages[1].optim.lr``) inside the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def join(path: str, key: Union[str, int]) -> str:
    """The key path of ``key`` below ``path``: ``a.b``, ``a[3]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def describe(tp: Any) -> str:
    """What a value of type ``tp`` looks like, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if hasattr(tp, "config_check"):
        return getattr(tp, "DESCRIPTION", tp.__name__)
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    if origin is typing.Literal:
        return "one of " + " | ".join(str(a) for a in args)
    if origin is Union:
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
        return f"a list of {describe(args[0])} values" if args else "a list"
    if origin is dict:
        return f"a mapping of {describe(args[1])} values" if args else "a mapping"
    return getattr(tp, "__name__", str(tp))


def _check_range(value: Any, meta: Any, path: str) -> None:
    if "min" in meta and value < meta["min"]:
        raise Invalid(path, f"must be >= {meta['min']}, got {value!r}")
    if "gt" in meta and not value > meta["gt"]:
        raise Invalid(path, f"must be > {meta['gt']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise Invalid(path, f"must be <= {meta['max']}, got {value!r}")


_SCALARS = {  # YAML's own scalar types, taken as they are (true is not an integer)
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def convert(tp: Any, value: Any, path: str, partial: bool = False) -> Any:
    """Check ``value`` against type ``tp`` and convert it (dataclasses are built from mappings).

    With ``partial``, dataclass fields without defaults may be missing and mappings stay mappings
    (for sections merged into others later, e.g. a schedule's ``defaults``). Raises :class:`Invalid`.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if hasattr(tp, "config_check"):
        return tp.config_check(value, path)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path, partial)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the precise one
            return convert(options[0], value, path, partial)
        errors = []
        for option in options:
            try:
                return convert(option, value, path, partial)
            except Invalid as e:
                errors.append((option, e))
        # a mapping given where exactly one alternative is a mapping: that alternative's error is the precise one
        mapping_like = [e for o, e in errors if dataclasses.is_dataclass(o) or typing.get_origin(o) is dict]
        if isinstance(value, dict) and len(mapping_like) == 1:
            raise mapping_like[0]
        raise Invalid(path, f"expected {describe(tp)}, got {value!r}")
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise Invalid(path, f"expected {describe(tp)}, got {value!r}")
        return value
    if tp in _SCALARS:
        if not _SCALARS[tp](value):
            raise Invalid(path, f"expected {describe(tp)}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise Invalid(path, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise Invalid(path, f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise Invalid(path, f"expected a finite number, got {value!r}")
        return number
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise Invalid(path, f"expected {describe(tp)}, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise Invalid(path, f"expected {describe(tp)}, got {value!r}")
            return tuple(convert(a, v, join(path, i), partial) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [convert(item, v, join(path, i), partial) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise Invalid(path, f"expected {describe(tp)}, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {convert(kt, k, path, partial): convert(vt, v, join(path, str(k)), partial)
                for k, v in value.items()}
    raise TypeError(f"config type {tp!r} is not supported")  # a programming error, not bad input


def _convert_dataclass(cls: Type[T], value: Any, path: str, partial: bool) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise Invalid(path, f"expected {describe(cls)}, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            raise Invalid(join(path, str(key)), f"unknown key (known: {', '.join(fields)})")
    out: Dict[str, Any] = {}
    for name, f in fields.items():
        if name in value and value[name] is None and _has_default(f) and not _optional(hints[name]):
            continue  # `section: null` (an empty YAML section) means the section's defaults
        if name in value:
            v = convert(hints[name], value[name], join(path, name), partial)
            if f.metadata and v is not None:
                _check_range(v, f.metadata, join(path, name))
            out[name] = v
        elif not _has_default(f) and not partial:
            raise Invalid(join(path, name), f"required ({describe(hints[name])})")
    if partial:
        return out
    obj = cls(**out)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except Invalid as e:
            raise Invalid(join(path, e.path) if e.path else path, e.message) from None
    return obj


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) is Union and type(None) in typing.get_args(tp)


def parse(cls: Type[T], data: Any, where: str, path: str = "") -> T:
    """``data`` checked against dataclass ``cls`` and built; errors name ``where`` (the file)."""
    try:
        return convert(cls, data, path)
    except Invalid as e:
        raise ConfigError(f"{where}: {e}") from None


def check_partial(cls: type, data: Any, where: str, path: str = "") -> Dict[str, Any]:
    """Check the keys present in ``data`` against ``cls`` (missing required keys are fine)."""
    try:
        return convert(cls, data, path, partial=True)
    except Invalid as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(obj: Any) -> Any:
    """The plain (YAML-ready) form of a parsed config: dataclasses -> mappings, tuples -> lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------------
# files, inheritance, overrides
# ---------------------------------------------------------------------------------------------
def merge(base: Any, override: Any) -> Any:
    """``override`` merged onto a copy of ``base``: mappings merge key by key; lists of mappings
    that all have a ``name`` merge entry by entry by name (new names are appended); everything
    else, lists included, is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for key, value in override.items():
            out[key] = merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    if _named_list(base) and _named_list(override):
        out = copy.deepcopy(base)
        index = {entry["name"]: i for i, entry in enumerate(out)}
        for entry in override:
            if entry["name"] in index:
                out[index[entry["name"]]] = merge(out[index[entry["name"]]], entry)
            else:
                out.append(copy.deepcopy(entry))
        return out
    return copy.deepcopy(override)


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps
    the last one silently: a typo that drops settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a mapping key must be a plain value, got {key!r}", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: PathLike) -> Dict[str, Any]:
    """A YAML mapping from a file (a key twice in one mapping is an error); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.load(f, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return cfg


def load_file(path: PathLike, _seen: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """A config file with its ``base:`` chain resolved (the result has no ``base`` key).

    ``base`` is a file or a list of files (relative to this one), merged in order, then this file
    onto them."""
    path = Path(path)
    seen = _seen + (path.resolve(),)
    cfg = read_yaml(path)
    bases = cfg.pop("base", None)
    if bases is None:
        return cfg
    if isinstance(bases, str):
        bases = [bases]
    if not (isinstance(bases, list) and bases and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: base: expected a file name or a list of them, got {bases!r}")
    merged: Dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if base_path.resolve() in seen:
            raise ConfigError(f"{path}: base: {base} is inherited in a cycle")
        if not base_path.is_file():
            raise ConfigError(f"{path}: base: {base_path} not found")
        merged = merge(merged, load_file(base_path, seen))
    return merge(merged, cfg)


def _set_by_path(cfg: Dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = cfg
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            try:
                idx = int(key)
                node[idx]
            except (ValueError, IndexError):
                raise ConfigError(f"override {dotted!r}: {key!r} is not a valid list index") from None
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError(f"override {dotted!r}: cannot descend into a {type(node).__name__}")


def apply_overrides(cfg: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``key.path=value`` strings (values parsed as YAML; list indices are integers:
    ``stages.1.max_steps=50``) to a config mapping, in place. The result is checked by whoever
    parses it, so a typo in an override is reported like one in the file."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: invalid YAML value: {e}") from None
        _set_by_path(cfg, key.strip(), parsed)
    return cfg


def load(cls: Type[T], path: PathLike, overrides: Sequence[str] = ()) -> T:
    """Read a config file (with ``base:``), apply overrides and parse it into ``cls``."""
    return parse(cls, apply_overrides(load_file(path), overrides), str(path))


__all__ = ["Invalid", "apply_overrides", "check_partial", "convert", "describe", "join", "load", "load_file",
           "merge", "parse", "read_yaml", "to_dict"]
