"""Typed configs: dataclasses loaded from YAML, with `dotted.key=value` overrides from the command line.

Every mistake a user can make in a config (malformed YAML, an unknown key, a wrong type, a value out of
range) is reported as one `InvgenConfigError` naming the file and the field, with a did-you-mean for
unknown keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from invgen.errors import InvgenConfigError, shown

T = TypeVar("T")


SCALE_LIMIT = 10.0
"""Largest |s| for the adapter's guidance scale: far beyond any useful value, well before overflow."""
GUIDANCE_SCALE_LIMIT = 100.0
"""Largest classifier-free guidance scale (0 to 1 means no guidance, as in diffusers)."""

# A plain decimal number as text; words such as `nan` or `inf` stay text, and so are refused as numbers.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def finite(value: float, field: str) -> float:
    """`value` as a float, or a config error naming `field` when it is NaN or infinite (or too large)."""
    if isinstance(value, bool):
        raise InvgenConfigError(f"{_label(field)}must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf
    except (TypeError, ValueError):
        raise InvgenConfigError(f"{_label(field)}must be a number, got {_short(value)}") from None
    if not math.isfinite(number):
        raise InvgenConfigError(f"{_label(field)}must be a finite number, got {_short(value)}")
    return number


def _label(field: str) -> str:
    # Config fields read `train.learning_rate: must ...`; command-line options `--scale must ...`.
    return f"{field} " if field.startswith("-") else f"{field}: "


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"


def check_number(
    value: float,
    field: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float:
    """`value` if it is finite and within [low, high] (or (low, high] with `low_open`); else a config error.

    Used for numbers read outside config files (command-line options), so that they get the same one
    sentence as a config field: `--scale must be between -10 and 10, got 1e+30`.
    """
    number = finite(value, field)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and number > high
    if below or above:
        if low is not None and high is not None:
            bounds = f"in ({low:g}, {high:g}]" if low_open else f"between {low:g} and {high:g}"
        elif low is not None:
            bounds = f"greater than {low:g}" if low_open else f"{low:g} or more"
        else:
            bounds = f"{high:g} or less"
        raise InvgenConfigError(f"{_label(field)}must be {bounds}, got {_short(value)}")
    return number


SEED_LIMIT = 2**32 - 1
"""Seeds are 0 to 2**32 - 1, which numpy, torch and the per-image seeds of `invgen.sampling` all take."""


def check_seed(value: int, field: str) -> int:
    """`value` if it is a seed every random generator takes; else a config error naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_LIMIT:
        raise InvgenConfigError(f"{_label(field)}must be an integer from 0 to {SEED_LIMIT}, got {_short(value)}")
    return value


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
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            # YAML 1.1 reads `1e-4` (no dot, no exponent sign) as a string; a number beyond float is refused.
            text, value = value.strip(), float(value)
            if not math.isfinite(value):
                raise InvgenConfigError(f"{where}: must be a finite number, got {text}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvgenConfigError(f"{where}: expected a number, got {value!r}")
        return finite(value, where)
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
        source = shown(path)
        if not path.is_file():
            raise InvgenConfigError(f"config file {source} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise InvgenConfigError(f"{source}: not UTF-8 text (byte {e.start + 1})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise InvgenConfigError(f"{source}{line}: malformed YAML ({problem})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InvgenConfigError(f"{source}: expected a mapping at the top level, got {type(loaded).__name__}")
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
