"""One typed dataclass per stage, shared by the Python API, the CLI and config files."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ._errors import InputError

T = TypeVar("T")


def load_config_file(path: str | Path) -> dict:
    """Read a JSON or YAML config file into a dict."""
    path = Path(path)
    if not path.exists():
        msg = f"{path}: config file not found"
        raise FileNotFoundError(msg)
    text = path.read_text()
    if path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        msg = f"{path}: expected a mapping of option -> value at the top level"
        raise InputError(msg)
    return data


def check_keys(values: Mapping[str, Any], names: list[str], *, source: str, what: str) -> None:
    """Fail on the first key of ``values`` not in ``names``, naming the closest valid one."""
    unknown = [k for k in values if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {sorted(names)}"
        msg = f"{source}: unknown option {key!r} for {what}{hint}"
        raise InputError(msg)


def config_or_options(cls: type[T], config: T | None, options: Mapping[str, Any]) -> T:
    """A stage's settings from ``config=`` or from its fields given as keywords (not both).

    >>> config_or_options(EmbedConfig, None, {"batch_size": 8}).batch_size  # doctest: +SKIP
    8
    """
    if config is not None and options:
        msg = "pass either config= or keyword options, not both"
        raise TypeError(msg)
    return config or build_config(cls, options)


def build_config(cls: type[T], values: Mapping[str, Any], *, source: str | None = None) -> T:
    """Instantiate dataclass ``cls`` from ``values``, checked by its ``__post_init__``.

    Unknown keys get a did-you-mean error; errors name ``source`` (a file and section) when given.
    """
    check_keys(values, [f.name for f in dataclasses.fields(cls)], source=source or "options", what=cls.__name__)
    try:
        return cls(**values)
    except InputError as err:
        if source is None:
            raise
        msg = f"{source}: {err}"
        raise InputError(msg) from err


def field_help(cls: type) -> dict[str, str]:
    """The ``# comment`` after each field of dataclass ``cls`` and its bases: the option's help."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for line in inspect.getsource(klass).splitlines():
                match = re.match(r"\s+(\w+): [^#]*#\s*(.+)$", line)
                if match:
                    found[match.group(1)] = match.group(2)
    return found


def _members(annotation: Any) -> list:
    """The non-None members of a union annotation (the annotation itself otherwise)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _parse_value(kind: Any, optional: bool) -> Callable[[str], Any]:
    """Parse a command-line string for a field of annotation member ``kind`` ("none" gives None if optional)."""

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        if kind is bool:
            if text.lower() in {"1", "true", "yes", "on"}:
                return True
            if text.lower() in {"0", "false", "no", "off"}:
                return False
            msg = f"expected true or false, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        if kind in (int, float, str):
            return kind(text)
        if text.lstrip()[:1] in "{[":  # a list or mapping as JSON
            try:
                return json.loads(text)
            except json.JSONDecodeError as err:
                msg = f"not valid JSON: {err}"
                raise argparse.ArgumentTypeError(msg) from err
        items = [item for item in text.split(",") if item]  # A,B=C: a list, or a mapping when any item has "="
        if any("=" in item for item in items):
            return dict(item.split("=", 1) if "=" in item else (item, item) for item in items)
        return items

    return parse


def _cli_kind(annotation: Any) -> tuple[Any, str]:
    """The member of a field's annotation that the command line gives, and its metavar."""
    members = _members(annotation)
    for kind in (bool, int, float):
        if kind in members:
            return kind, {bool: "true|false", int: "N", float: "X"}[kind]
    if str in members or Path in members:  # paths and names (a mapping given as a file path)
        return str, ""
    return members[0], "JSON|A,B=C"


class _MergeMappings(argparse.Action):
    """A mapping option given more than once (``--filter a=1 --filter b=2``) adds up to one mapping."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        earlier = getattr(namespace, self.dest, None)
        if isinstance(earlier, dict) and isinstance(values, dict):
            values = {**earlier, **values}
        setattr(namespace, self.dest, values)


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, *, skip: tuple = ()) -> None:
    """Add ``--field-name`` for each field of dataclass ``cls``, with its comment and default as help.

    Numbers, text and ``true|false`` are read as such; lists and mappings as JSON or ``A,B=C``;
    ``none`` sets an optional field to None; a mapping given twice merges. Options left out keep
    the dataclass default.
    """
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or field.name in {a.dest for a in parser._actions}:
            continue
        annotation = hints[field.name]
        kind, metavar = _cli_kind(annotation)
        optional = type(None) in typing.get_args(annotation)
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        mapping = any(typing.get_origin(m) in (dict, Mapping) for m in _members(annotation))
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_parse_value(kind, optional),
            nargs="?" if kind is bool else None,  # a bare --flag means true
            const=True if kind is bool else None,
            action=_MergeMappings if mapping else "store",
            default=argparse.SUPPRESS,  # absent options keep the config file's or the dataclass's value
            metavar=metavar or None,
            help=f"{helps.get(field.name, '')} (default: {default})".replace("%", "%%"),  # argparse formats help
        )


def config_from_cli(cls: type[T], args: argparse.Namespace, config_file: str | Path | None = None) -> T:
    """Config file values (if any), overridden by options given on the command line."""
    values = load_config_file(config_file) if config_file else {}
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return build_config(cls, values, source=str(config_file or "command line"))


def choose_closest(
    name: str,
    supported: Sequence[str],
    unsupported: Sequence[str] | None = None,
    cutoff: float = 0.4,
) -> str:
    """Return the option in ``supported`` closest to ``name`` (case-insensitive fuzzy match).

    Raises ``ValueError`` when ``name`` is in ``unsupported`` or nothing is similar enough.

    >>> choose_closest("adamw", ["AdamW", "Lamb"])
    'AdamW'
    """
    lowered = {s.lower(): s for s in supported}
    if unsupported and name.lower() in {u.lower() for u in unsupported}:
        msg = f"{name!r} is not supported; choose one of {list(supported)}"
        raise InputError(msg)
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=cutoff)
    if not match:
        msg = f"{name!r} is not a known option; choose one of {list(supported)}"
        raise InputError(msg)
    return lowered[match[0]]
