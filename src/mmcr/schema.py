"""One schema engine for every set of options the project reads: runs, evaluations, analysis, export.

A *section* is a dataclass whose fields are declared with :func:`option` (a default, a doc line, a
numeric :class:`Range`, choices read from a registry *when a value is checked*, a free-form validator,
and a resume rule) or :func:`subsection` (a nested section). :func:`build` turns a nested mapping into
a section, refusing unknown keys by name (with the valid ones) and wrong types, ranges and choices
with one line: "``key`` must be ``range``, got ``value``" or "invalid value ``v`` for ``key``; choose
one of ...". A section class may define ``check(self)`` for cross-field rules; :func:`build` calls it.

The same objects come from YAML files (:func:`read_yaml`, ``safe_load`` only: tags are refused), from
``key.sub=value`` overrides (:func:`parse_override`), and go back to YAML (:func:`dump_yaml`).
:func:`config_changes` lists what differs between two configs with each field's resume rule:
``free`` (applied, recorded), ``apply`` (needs an explicit allowance), ``fixed`` (never changed on
resume). :func:`describe` lists (key, default, doc, valid values) for ``--help-config`` and the docs;
:func:`add_config_arguments` / :func:`config_from_args` give an argparse command ``--config``,
``--set``, ``--help-config`` and ``--print-config`` over any section.

Why dataclasses and not pydantic: see DEVELOPERS.md ("Option schemas").
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import numbers
import operator
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

__all__ = [
    "AT_LEAST_1", "FRACTION", "FRACTION_OPEN", "NON_NEGATIVE", "POSITIVE", "RESUME_RULES", "SEED",
    "ConfigChange", "ConfigError", "FieldInfo", "HelpConfig", "Range", "add_config_arguments", "build", "check_seed",
    "config_changes", "config_flag", "config_from_args", "describe", "dump_yaml", "flatten", "merge", "nest",
    "normalise_numbers", "option", "parse_override", "print_config", "read_yaml", "replace", "resolve", "resume_rule",
    "section", "subsection", "to_dict",
]


class ConfigError(ValueError):
    """A config key or value that is not valid; the message says which and what is."""


RESUME_RULES = ("free", "apply", "fixed")


# ------------------------------------------------------------------------------------------ checks
@dataclass(frozen=True)
class Range:
    """A numeric constraint: lo <= x (< if lo_open) and x <= hi (< if hi_open); None = unbounded. NaN never
    passes, and neither does +-inf unless ``infinite`` says a field means something by it."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    infinite: bool = False

    def ok(self, x: float) -> bool:
        if x != x:  # NaN
            return False
        if not self.infinite and x in (float("inf"), float("-inf")):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def describe(self, integer: bool = False) -> str:
        lo, hi = _num(self.lo), _num(self.hi)
        finite = "" if self.infinite or integer else " and finite"
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {lo}{finite}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {hi}{finite}"
        return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def check(self, name: str, value, integer: bool = False, error: type[ValueError] = ValueError):
        """``value`` when it is a number (an integer if ``integer``) inside the range, else ``error`` with
        the one-line message the config gives: the same rule for config fields, CLI flags and library
        arguments."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
                integer and not (isinstance(value, numbers.Integral) or float(value).is_integer())):
            raise error(f"{name} must be {'an integer' if integer else 'a number'} {self.describe(integer)}, "
                        f"got {value!r}")
        if not self.ok(value):
            raise error(f"{name} must be {self.describe(integer)}, got {value!r}")
        return int(value) if integer else value


def _num(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, None, lo_open=True)
NON_NEGATIVE = Range(0, None)
AT_LEAST_1 = Range(1, None)
FRACTION = Range(0, 1)
FRACTION_OPEN = Range(0, 1, hi_open=True)
SEED = Range(0, 2**32 - 1)  # numpy's legacy seeding takes 32 bits: one rule for runs and library calls


def check_seed(seed, name: str = "seed", error: type[ValueError] = ValueError) -> int:
    """The one rule for seeds, in configs and library calls alike: an integer in [0, 2**32 - 1]."""
    return SEED.check(name, seed, integer=True, error=error)


# ------------------------------------------------------------------------------------ declaring
def option(default, *, doc: str = "", check: Range | None = None, choices: Callable[[], Iterable[str]] | None = None,
           validate: Callable[[Any], str | None] | None = None, resume: str = "apply"):
    """A section field. ``choices`` is called when a value is checked (a registry filled by plugins after
    the section was defined still counts); ``validate(value)`` returns None or a hint of what is valid;
    ``resume`` is the field's resume rule (free | apply | fixed)."""
    if resume not in RESUME_RULES:
        raise ValueError(f"resume must be one of {', '.join(RESUME_RULES)}, got {resume!r}")
    meta = {"check": check, "choices": choices, "validate": validate, "resume": resume, "doc": doc}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def subsection(cls, resume: str | None = None, doc: str = ""):
    """A nested section field; ``resume`` (if given) is the rule of its fields that do not set their own."""
    return dataclasses.field(default_factory=cls, metadata={"resume": resume, "doc": doc})


def section(cls):
    """Class decorator: a dataclass checked by this engine (``from_dict``, ``to_dict`` and ``replace`` are
    added unless the class defines them)."""
    cls = dataclass(cls)
    if "from_dict" not in cls.__dict__:
        cls.from_dict = classmethod(lambda c, data=None: build(c, data or {}))
    if "to_dict" not in cls.__dict__:
        cls.to_dict = to_dict
    if "replace" not in cls.__dict__:
        cls.replace = replace
    return cls


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls) -> dict[str, Any]:
    """The resolved field types of a section (cached)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _is_section(typ) -> bool:
    return isinstance(typ, type) and dataclasses.is_dataclass(typ)


# ------------------------------------------------------------------------------------ building
def build(cls, data: Any, prefix: str = ""):
    """A section of type ``cls`` from a nested mapping (missing keys take their defaults), every value
    checked; unknown keys are refused by name with the valid keys of that section."""
    if not isinstance(data, dict):
        first = dataclasses.fields(cls)[0].name
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} is a section; set its fields, e.g. "
                          f"{prefix}{first}=...")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key {prefix + str(unknown[0])!r}; valid keys here: "
                          f"{', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        typ, path = hints(cls)[key], prefix + key
        if _is_section(typ):
            kwargs[key] = build(typ, value, path + ".")
        else:
            kwargs[key] = check_value(path, typ, names[key].metadata, value)
    obj = cls(**kwargs)
    if callable(getattr(obj, "check", None)):
        obj.check()
    return obj


def _optional(typ) -> tuple[Any, bool]:
    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest)), True
    return typ, False


def _number(path: str, value: Any, want: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path} must be {'an integer' if want is int else 'a number'}, got {value!r}")
    if want is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _scalar(path: str, base, value: Any) -> Any:
    """``value`` as the field's type (int | str, bool, int, float, str), else a one-line ConfigError."""
    if typing.get_origin(base) in (typing.Union, types.UnionType):  # int | str: a number, or a keyword
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{path} must be an integer or a keyword, got {value!r}")
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if base in (int, float):
        return _number(path, value, base)
    if base is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a folder called 2024, say
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {base} at {path}")  # pragma: no cover - a schema bug


def check_value(path: str, typ, meta, value: Any) -> Any:
    """One field's value converted to its type and checked (range, choices, validator)."""
    base, optional = _optional(typ)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path} cannot be null")
    origin = typing.get_origin(base)
    if base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        out = dict(value)
    elif origin is list:
        (item,) = typing.get_args(base)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list of {item.__name__}s, got {value!r}")
        out = [_scalar(f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    else:
        out = _scalar(path, base, value)
    rng: Range | None = meta.get("check")
    if rng is not None:
        integer = base is int or (origin is list and typing.get_args(base) == (int,))
        for v in out if isinstance(out, list) else [out]:
            if not rng.ok(v):
                raise ConfigError(f"{path} must be {rng.describe(integer)}, got {v!r}")
    choices = meta.get("choices")
    if choices is not None:
        valid = [str(c) for c in choices()]
        for v in out if isinstance(out, list) else [out]:
            if v not in valid:
                raise ConfigError(f"invalid value {v!r} for {path}; choose one of {', '.join(valid)}")
    validator = meta.get("validate")
    if validator is not None:
        hint = validator(out)
        if hint:
            raise ConfigError(f"invalid value {out!r} for {path}; {hint}")
    return out


def to_dict(obj) -> dict:
    """A section as plain nested dicts and lists (what :func:`dump_yaml` writes)."""
    return dataclasses.asdict(obj)


def replace(obj, **changes: Any):
    """A copy of a section with fields set, checked; a key may be a ``section.key`` path
    (``cfg.replace(**{"train.epochs": 3})``). An unknown name is refused like an unknown config key."""
    data = to_dict(obj)
    for path, value in changes.items():
        merge(data, nest(path, value))
    return type(obj).from_dict(data) if hasattr(type(obj), "from_dict") else build(type(obj), data)


# ------------------------------------------------------------------------------------ YAML + overrides
def _looks_numeric(s: str) -> bool:
    # YAML 1.1 reads "2e-3" as a string; accept it as the number every user means.
    try:
        float(s)
    except ValueError:
        return False
    return s.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def normalise_numbers(node: Any) -> Any:
    """Strings YAML 1.1 leaves unread that are plain numbers ("2e-3") as floats, everywhere in ``node``."""
    if isinstance(node, dict):
        return {k: normalise_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [normalise_numbers(v) for v in node]
    if isinstance(node, str) and _looks_numeric(node):
        return float(node)
    return node


def nest(path: str, value: Any) -> dict:
    """``"a.b.c", v`` -> ``{"a": {"b": {"c": v}}}``."""
    out: dict = {}
    node = out
    parts = path.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override key {path!r} must look like section.key, e.g. optim.lr")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse_override(text: str) -> dict:
    """``"optim.lr=2e-3"`` -> ``{"optim": {"lr": 0.002}}``; the value is read as YAML (safe_load)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=2e-3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read the value of override {text!r} as YAML ({_yaml_problem(e)}); "
                          "quote strings and close brackets, e.g. model.projector.hidden=[64,32]") from e
    return nest(key, normalise_numbers(value))


def merge(base: dict, update: dict) -> dict:
    """Deep merge of plain mappings into ``base`` (unknown keys are left for :func:`build` to refuse)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def read_yaml(path: str | Path, what: str = "config sections") -> dict:
    """A YAML file holding a mapping, read with ``safe_load`` (tags such as ``!!python/object`` are
    refused); syntax errors become one-line ConfigErrors."""
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"{path} holds a YAML tag that is not plain data ({_yaml_problem(e)}); configs are "
                          "read with yaml.safe_load: write plain values") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(e)}; fix the file") from e
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror}); check the path") from e
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of {what}")
    return normalise_numbers(data)


def dump_yaml(obj) -> str:
    """A section as YAML text, in field order (what :func:`read_yaml` + :func:`build` read back)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


# ------------------------------------------------------------------------------------ differences
def flatten(obj, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every field of a section; free-form mappings (dict fields) are one value."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if _is_section(hints(type(obj))[f.name]):
            out.update(flatten(value, prefix + f.name + "."))
        else:
            out[prefix + f.name] = copy.deepcopy(value)
    return out


def resume_rule(cls, path: str) -> str:
    """The resume rule of a field: its own, else the nearest enclosing section's, else ``apply``."""
    rule = "apply"
    for part in path.split("."):
        f = {x.name: x for x in dataclasses.fields(cls)}[part]
        rule = f.metadata.get("resume") or rule
        cls = hints(cls)[part]
    return rule


@dataclass
class ConfigChange:
    path: str
    old: Any
    new: Any
    rule: str  # free | apply | fixed

    def __str__(self) -> str:
        return f"{self.path}: {self.old!r} -> {self.new!r}"


def config_changes(old, new) -> list[ConfigChange]:
    """Every field that differs between two sections of the same type, with its resume rule."""
    a, b = flatten(old), flatten(new)
    return [ConfigChange(k, a[k], b[k], resume_rule(type(old), k)) for k in a if a[k] != b[k]]


class FieldInfo(NamedTuple):
    key: str
    default: Any
    doc: str
    valid: str  # the range, the choices or the validator's hint; "" when any value of the type goes


def _type_name(typ) -> str:
    base, optional = _optional(typ)
    name = getattr(base, "__name__", None) or str(base).replace("typing.", "")
    if typing.get_origin(base) is list:
        name = f"list of {typing.get_args(base)[0].__name__}"
    return name + (" or null" if optional else "")


def describe(cls, prefix: str = "") -> list[FieldInfo]:
    """(key, default, doc, valid values) of every field of a section, nested ones as ``a.b``."""
    out: list[FieldInfo] = []
    for f in dataclasses.fields(cls):
        typ = hints(cls)[f.name]
        if _is_section(typ):
            out.extend(describe(typ, prefix + f.name + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        valid = []
        if f.metadata.get("check") is not None:
            integer = _optional(typ)[0] is int or typing.get_args(typ) == (int,)
            valid.append(f.metadata["check"].describe(integer))
        if f.metadata.get("choices") is not None:
            valid.append("one of " + ", ".join(str(c) for c in f.metadata["choices"]()))
        if valid and _optional(typ)[1]:
            valid.append("or null")
        valid = valid or [_type_name(typ)]
        out.append(FieldInfo(prefix + f.name, default, f.metadata.get("doc") or "", "; ".join(valid)))
    return out


def help_text(cls) -> str:
    """The ``--help-config`` listing: one line per key, ``key = default  (valid)  # doc``."""
    lines = []
    for info in describe(cls):
        default = yaml.safe_dump(info.default, default_flow_style=True, width=10**9).strip()
        default = default.removesuffix("...").strip()
        doc = f"  # {info.doc}" if info.doc else ""
        lines.append(f"{info.key} = {default}  ({info.valid}){doc}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ argparse
_FLAGS = "_config_flags"  # parser default: {dest: (key, flag)} of the flags that set config fields


class HelpConfig(argparse.Action):
    """``--help-config``: prints every key and exits 0 during parsing (no positional arguments needed).
    ``section_cls`` may be a function returning the class, for sections of modules imported only when used."""

    def __init__(self, option_strings, dest, section_cls=None, **kwargs):
        self.section_cls = section_cls
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        cls = self.section_cls if isinstance(self.section_cls, type) else self.section_cls()
        print(help_text(cls))
        parser.exit(0)


def add_config_arguments(parser: argparse.ArgumentParser, section_cls, *, config_file: bool = True,
                         what: str = "settings") -> None:
    """``--config FILE.yaml``, ``--set key=value`` (repeatable), ``--help-config`` and ``--print-config``
    over ``section_cls``; :func:`config_from_args` resolves them (defaults <- file <- --set <- flags)."""
    if config_file:
        parser.add_argument("--config", metavar="FILE.yaml", default=None,
                            help=f"YAML file of {what} (keys as in --help-config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"set any of the {what}, e.g. --set {describe(section_cls)[0].key}=... (repeatable)")
    parser.add_argument("--help-config", action=HelpConfig, section_cls=section_cls,
                        help=f"list every key of the {what} with its default, valid values and meaning, then exit")
    parser.add_argument("--print-config", action="store_true",
                        help=f"print the resolved {what} as YAML and exit")
    parser.set_defaults(**{_FLAGS: {}})


def config_flag(parser: argparse.ArgumentParser, flag: str, key: str, section_cls, **kwargs) -> None:
    """A command's own flag that sets the field ``key`` of ``section_cls``; its help names the key and the
    field's default. Given together with ``--set key=...`` of another value, it is refused."""
    info = {i.key: i for i in describe(section_cls)}[key]
    dest = "cfg__" + key.replace(".", "__")
    help_ = kwargs.pop("help", None) or info.doc
    const = kwargs.get("action") in ("store_true", "store_false", "store_const")
    shown = "" if const or info.default is None else f", default {info.default}"
    if not const:
        kwargs.setdefault("metavar", key.rsplit(".", 1)[-1].upper())
    parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS,
                        help=f"{help_} [{key}{shown}]".replace("%", "%%"), **kwargs)
    flags = dict(parser.get_default(_FLAGS) or {})
    flags[dest] = (key, flag)
    parser.set_defaults(**{_FLAGS: flags})


def _flat_overrides(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(_flat_overrides(v, prefix + k + "."))
        out[prefix + k] = v
    return out


def _field_spec(cls, key: str):
    """``(type, metadata)`` of the field at path ``key`` of a section."""
    *head, last = key.split(".")
    for part in head:
        cls = hints(cls)[part]
    return hints(cls)[last], {f.name: f for f in dataclasses.fields(cls)}[last].metadata


def config_data(args: argparse.Namespace, section_cls, base: dict | None = None) -> dict:
    """The merged mapping of ``base`` <- ``--config`` <- ``--set`` <- the command's flags; each flag's
    value is checked under the flag's own name (what the user typed); a flag that contradicts a
    ``--set`` of the same key is refused."""
    data = copy.deepcopy(base or {})
    if getattr(args, "config", None):
        merge(data, read_yaml(args.config))
    sets: dict = {}
    for text in getattr(args, "overrides", None) or []:
        merge(sets, parse_override(text))
    merge(data, sets)
    given = _flat_overrides(sets)
    for dest, (key, flag) in (getattr(args, _FLAGS, None) or {}).items():
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if key in given and given[key] != value:
            raise ConfigError(f"{flag} {value} contradicts {key}={given[key]} (from --set); give {key} once")
        typ, meta = _field_spec(section_cls, key)
        merge(data, nest(key, check_value(flag, typ, meta, value)))
    return data


def config_from_args(args: argparse.Namespace, section_cls, base: dict | None = None):
    """The checked section of a parsed command line (see :func:`add_config_arguments`)."""
    data = config_data(args, section_cls, base)
    return section_cls.from_dict(data) if hasattr(section_cls, "from_dict") else build(section_cls, data)


def resolve(section_cls, settings=None, changes: dict | None = None):
    """The settings a library call runs with: ``settings`` (a ``section_cls``; None = its defaults) with
    ``changes`` (field names or ``a.b`` paths) applied, all checked; an unknown name is refused by name."""
    if settings is None:
        settings = section_cls()
    elif not isinstance(settings, section_cls):
        raise TypeError(f"settings must be a {section_cls.__name__}, got {type(settings).__name__}; pass single "
                        f"settings as keywords, e.g. {describe(section_cls)[0].key}=...")
    return replace(settings, **(changes or {}))


def print_config(args: argparse.Namespace, obj, file=None) -> bool:
    """With ``--print-config``: print ``obj`` as YAML and return True (the command then exits 0)."""
    if not getattr(args, "print_config", False):
        return False
    print(dump_yaml(obj), end="", file=file or sys.stdout)
    return True
