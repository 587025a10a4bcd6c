"""The one shape of every name a user chooses: data sets, backbones, objectives, optimisers, schedules,
augmentation presets and evaluations.

A :class:`Registry` maps a name to an :class:`Entry` (builder, accepted options, one-line doc). Config
choices, ``--help-config``, error messages and ``mmcr list`` all read the registries, so a component is a
valid choice everywhere as soon as it is registered (timm's rule: the registry is the single source of
names, listing and validation). Options are a typed section of the schema engine, so an option error
reads like a config error: it names the option and its valid range.

    OBJECTIVES = Registry("objective", "objectives")

    @OBJECTIVES.register("mmcr", doc="MMCR: lmbda x mean ||Z_b||_* - ||C||_*", options=options_section(
        "mmcr", lmbda=(float, option(0.0, check=NON_NEGATIVE, doc="weight of the local nuclear norms"))))
    class MMCRLoss(nn.Module): ...

A *family* is one entry for every name with a prefix (``timm:<name>``): ``get("timm:vit_small_patch16_224")``
resolves to it and its builder gets the full name. This module sits at the bottom: it imports nothing from
mmcr but the schema engine; each registry lives beside the components it names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mmcr import schema

__all__ = ["Entry", "Registry", "RegistryError", "all_registries", "describe_options", "options_section", "registry"]


class RegistryError(ValueError):
    """A name that is not registered, or an option its entry does not take; the message lists what is valid."""


def options_section(title: str, **options: tuple[Any, Any]) -> type:
    """A schema section (a dataclass) from ``key=(type, mmcr.schema.option(default, ...))`` pairs: the
    ``options`` of an entry, checked by :func:`mmcr.schema.build` like any config section."""
    fields = [(key, typ, spec) for key, (typ, spec) in options.items()]
    cls_name = "".join(p.capitalize() for p in title.replace("-", "_").replace(":", "_").split("_")) + "Options"
    return dataclasses.make_dataclass(cls_name, fields)


def describe_options(section: type | None) -> list[schema.FieldInfo]:
    """``(key, default, doc, valid values)`` of every option of a section, for listings and help texts."""
    return [] if section is None else schema.describe(section)


# --------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Entry:
    """One registered name: ``builder`` makes the component, ``options`` (a schema section, or None: takes
    none) says which keyword options it accepts, ``doc`` is its one-line description."""

    name: str
    builder: Callable
    options: type | None
    doc: str
    family: bool = False  # one entry for every ``<prefix><name>`` (name is "<prefix><name>")
    loose: bool = False  # option values are checked by the builder (numbers or pairs the schema cannot type)

    @property
    def prefix(self) -> str:
        return self.name.split("<", 1)[0] if self.family else self.name

    def option_names(self) -> list[str]:
        return [] if self.options is None else [f.name for f in dataclasses.fields(self.options)]


_REGISTRIES: dict[str, Registry] = {}


class Registry:
    """Names of one kind (``kind``: "data set"; ``plural``: "datasets", the name ``mmcr list`` shows).
    ``error``: the RegistryError subclass its lookups raise (a data set's also is a DatasetError)."""

    def __init__(self, kind: str, plural: str, error: type[RegistryError] = RegistryError):
        if plural in _REGISTRIES:
            raise RegistryError(f"a registry of {plural} exists already ({_REGISTRIES[plural].kind}); reuse it")
        self.kind, self.plural, self.error = kind, plural, error
        self._entries: dict[str, Entry] = {}
        _REGISTRIES[plural] = self

    def register(self, name: str, builder: Callable | None = None, *, options: type | None = None,
                 doc: str = "", family: bool = False, loose: bool = False):
        """Register ``builder`` under ``name``; without ``builder``, a decorator. ``family``: ``name`` is
        ``"<prefix><name>"`` (``"timm:<name>"``) and the entry answers every name with that prefix.
        ``loose``: :meth:`check_options` checks the option names only (none with ``options=None``: free-form
        options, as timm.create_model's); the builder checks their values."""
        if not doc or "\n" in doc:
            raise ValueError(f"{self.kind} {name!r} needs a one-line doc")
        if options is not None and not dataclasses.is_dataclass(options):
            raise TypeError(f"options of {self.kind} {name!r} must be a schema section (options_section(...))")
        if family and "<" not in name:
            raise ValueError(f"a family name looks like 'prefix:<name>', got {name!r}")

        def add(fn: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered already")
            self._entries[name] = Entry(name, fn, options, doc, family, loose)
            return fn

        return add if builder is None else add(builder)

    # ------------------------------------------------------------------------------------- reading
    def names(self) -> list[str]:
        """Every registered name, in registration order (families as ``prefix:<name>``)."""
        return list(self._entries)

    def entries(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def _find(self, name: str) -> Entry | None:
        name = str(name)
        if name in self._entries and not self._entries[name].family:
            return self._entries[name]
        for e in self._entries.values():
            if e.family and name.startswith(e.prefix) and len(name) > len(e.prefix):
                return e
        return None

    def __contains__(self, name: object) -> bool:
        return self._find(str(name)) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:  # ``for name in OBJECTIVES``, ``sorted(OBJECTIVES)``: the names
        return iter(self.names())

    def get(self, name: str) -> Entry:
        """The entry of ``name`` (a family's for ``prefix:anything``), else a one-line error listing the names."""
        entry = self._find(name)
        if entry is None:
            raise self.error(f"unknown {self.kind} {str(name)!r}; choose one of {', '.join(self.names())}")
        return entry

    def check_options(self, name: str, mapping: Mapping[str, Any] | None, where: str = "") -> dict[str, Any]:
        """``mapping`` validated against the options of ``name``: the given keys with checked (and coerced)
        values; an unknown key or a bad value is a one-line error. ``where`` prefixes value errors
        (``"data.options."`` in a run config)."""
        entry = self.get(name)
        mapping = dict(mapping or {})
        if entry.loose and entry.options is None:  # free-form options, every one checked by the builder
            return mapping
        accepted = entry.option_names()
        unknown = [k for k in mapping if k not in accepted]
        if unknown:
            takes = f"it takes {', '.join(accepted)}" if accepted else "it takes no options"
            raise self.error(f"unknown option {str(unknown[0])!r} for {self.kind} {str(name)!r}; {takes}")
        if not mapping or entry.loose:
            return mapping
        try:
            built = schema.build(entry.options, mapping, where)
        except schema.ConfigError as e:
            raise self.error(str(e)) from None
        return {k: getattr(built, k) for k in mapping}

    def defaults(self, name: str) -> dict[str, Any]:
        """The default of every option ``name`` takes."""
        return {info.key: info.default for info in describe_options(self.get(name).options)}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.plural!r}: {', '.join(self.names())})"


def registry(plural: str) -> Registry:
    """The registry called ``plural`` ("datasets", "objectives", ...). ``import mmcr`` loads every registry a
    run config chooses from, so the config reads them here, at check time, without importing them."""
    if plural not in _REGISTRIES:
        raise RegistryError(f"unknown registry {plural!r}; choose one of {', '.join(_REGISTRIES)}")
    return _REGISTRIES[plural]


def all_registries() -> list[Registry]:
    """Every registry created so far (``mmcr list`` imports the modules that hold them first)."""
    return list(_REGISTRIES.values())
