"""One typed dataclass per stage, shared by the Python API, the CLI and config files."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
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


def build_config(cls: type[T], values: Mapping[str, Any], *, source: str = "options") -> T:
    """Instantiate dataclass ``cls`` from ``values``; unknown keys get a did-you-mean error."""
    check_keys(values, [f.name for f in dataclasses.fields(cls)], source=source, what=cls.__name__)
    return cls(**values)


def _scalar_type(annotation: Any) -> type:
    """The base type of ``int``, ``int | None``, ``str | None`` ... (first non-None member)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing))  # noqa: S307 - our own annotations only
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_type(members[0])
    return annotation if annotation in (int, float, str, bool) else str


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, *, skip: tuple = ()) -> None:
    """Add ``--field-name`` for each scalar field of ``cls`` (defaults come from the dataclass)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = _scalar_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(
                flag, type=_parse_bool, default=None, metavar="true|false", help=f"default {field.default}"
            )
        else:
            parser.add_argument(flag, type=kind, default=None, help=f"default {field.default}")


def _parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    msg = f"expected true or false, got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def config_from_cli(cls: type[T], args: argparse.Namespace, config_file: str | Path | None) -> T:
    """Config file values (if any), overridden by options given on the command line."""
    values = load_config_file(config_file) if config_file else {}
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return build_config(cls, values, source=str(config_file or "command line"))
