"""Typed configs: dataclasses loaded from YAML, with `dotted.key=value` overrides from the command line.

Every mistake a user can make in a config (malformed YAML, an unknown key, a wrong type, a value out of
range) is reported as one `InvgenConfigError` naming the file and the field, with a did-you-mean for
unknown keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from invgen.errors import InvgenConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting where YAML is ambiguous (int for float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except InvgenConfigError as e:
                errors.append(str(e))
        raise InvgenConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        # YAML 1.1 reads a bare `no`/`yes` as a boolean: take it back as the word when the choice exists.
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args):
            word = {False: "no", True: "yes"}[value]
            value = word if word in args else value
        if value not in args:
            raise InvgenConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise InvgenConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InvgenConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise InvgenConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvgenConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvgenConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise InvgenConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InvgenConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _from_dict(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            at = f"{where}: " if where else ""  # top-level keys have no section to name
            raise InvgenConfigError(f"{at}unknown key {key!r}{hint}")
        default = fields[key].default_factory
        if isinstance(value, dict) and default is not dataclasses.MISSING and dataclasses.is_dataclass(default()):
            # A partial section overrides the parent's defaults for it, not the section class's own.
            value = _merge(dataclasses.asdict(default()), value)
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise InvgenConfigError(f"{where or cls.__name__}: {e}") from None
    return obj


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise InvgenConfigError(f"override {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from a YAML file (optional) and `key.sub=value` overrides, then validate it."""
    data: dict = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise InvgenConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise InvgenConfigError(f"{path}{line}: malformed YAML ({problem})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InvgenConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        data = loaded
    for item in overrides or []:
        if "=" not in item:
            raise InvgenConfigError(f"override '{item}' must look like key.subkey=value")
        key, value = item.split("=", 1)
        _set_dotted(data, key.strip(), _parse_scalar(value))
    cfg = _from_dict(cls, data, "")
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        try:
            validate()
        except InvgenConfigError as e:
            raise InvgenConfigError(f"{source}: {e}") from None
    return cfg


def check(condition: bool, field: str, message: str) -> None:
    """Raise a config error for `field` unless `condition` holds."""
    if not condition:
        raise InvgenConfigError(f"{field}: {message}")


def dump_config(cfg: Any, path: str | Path) -> None:
    from invgen.atomic import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
