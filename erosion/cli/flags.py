"""Command-line flags derived from config dataclasses (``erosion.core.settings``), and the configs built back.

Every field becomes ``--field-name`` (or its ``flag``), with the field's default, help and choices; a nested
config's fields become flags of their own, and a field that is ``parse``d takes text (a file name, say).
Booleans take ``--name`` / ``--no-name``, tuples comma-separated values; a ``repeat`` flag may be given more
than once (its values joined by commas).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def add(parser: argparse.ArgumentParser, config: type, defaults: Any = None) -> None:
    """Add a flag for every field of the ``config`` dataclass (``defaults``: an instance whose values to show)."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        default = _default(f, defaults)
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and not meta.get("parse"):
            add(parser, kind, None if default is dataclasses.MISSING else default)
            continue
        flag = meta.get("flag") or f.name.replace("_", "-")
        options: dict[str, Any] = {"dest": f.name, "help": meta.get("help", "") + _shown(default)}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["metavar"] = flag.upper().replace("-", "_")
            if not meta.get("parse"):
                options["type"] = _parser(kind)
            if meta.get("repeat"):
                options["action"] = "append"
        if default is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = None if meta.get("parse") or meta.get("repeat") else default
        if meta.get("choices"):
            options["choices"] = meta["choices"]
            options.pop("metavar", None)
        options["help"] = options["help"].replace("%", "%%")
        parser.add_argument("--" + flag, **options)


def build(config: type, args: argparse.Namespace) -> Any:
    """The ``config`` dataclass from the parsed flags (a field kept off the command line keeps its default)."""
    hints = typing.get_type_hints(config)
    values = {}
    for f in dataclasses.fields(config):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and not meta.get("parse"):
            values[f.name] = build(kind, args)
        elif meta.get("parse"):
            if getattr(args, f.name) is not None:
                values[f.name] = meta["parse"](getattr(args, f.name))
        elif meta.get("repeat"):
            given = getattr(args, f.name)
            values[f.name] = ",".join(given) if given is not None else _default(f, None)
        else:
            values[f.name] = getattr(args, f.name)
    return config(**values)


def _shown(default: Any) -> str:
    """The default as the help text ends with it; nothing for a required flag or an empty default."""
    if default is dataclasses.MISSING or default in (None, "", ()) or dataclasses.is_dataclass(default):
        return ""
    return f" (default: {','.join(map(str, default)) if isinstance(default, tuple) else default})"


def _default(f: dataclasses.Field, defaults: Any) -> Any:
    if defaults is not None:
        return getattr(defaults, f.name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _parser(kind: Any):
    """The argparse ``type`` of a field: its type, the X of ``X | None``, or comma-separated ``tuple[X, ...]``."""
    if isinstance(kind, types.UnionType):
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return lambda text: tuple(item(part) for part in text.split(",") if part)
    return kind
