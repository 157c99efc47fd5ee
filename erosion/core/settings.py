"""Config dataclass fields that carry their command-line help, so a default and its help live in one place.

The CLI (``erosion.cli.flags``) turns every field of a config into a flag: ``--name-with-dashes``, the help and
choices from here, the default from the field. A nested config's fields become flags of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any


def setting(
    help: str,
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    flag: str = "",
    choices: Sequence[str] = (),
    parse: Callable[[str], Any] | None = None,
    cli: bool = True,
    repeat: bool = False,
) -> Any:
    """A dataclass field with its help text; ``flag`` renames the flag, ``parse`` turns the flag's text into the
    value (a nested config read from a file, say), ``cli=False`` keeps the field off the command line, ``repeat``
    lets a text flag be given more than once (the values joined by commas)."""
    metadata = {"help": help, "flag": flag, "choices": tuple(choices), "parse": parse, "cli": cli, "repeat": repeat}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
