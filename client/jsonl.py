"""JSONL input files of the client CLIs (``rfad-client batch``, ``rfad-client judge``).

One JSON object per non-empty line, with a closed set of fields; every error names the file
and line, before anything is sent to the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click


def jsonl_objects(path: Path, fields: set[str]) -> Iterator[tuple[int, str, dict]]:
    """(line number, ``"path:line"``, object) per non-empty line of ``path``.

    Raises :class:`click.ClickException` naming the line for a line that is not JSON, not an
    object, or has a field outside ``fields``.
    """
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise click.ClickException(f"{where}: expected a JSON object, got {type(item).__name__}")
        unknown = sorted(set(item) - fields)
        if unknown:
            raise click.ClickException(f"{where}: unknown field(s) {', '.join(unknown)} "
                                       f"(allowed: {', '.join(sorted(fields))})")
        yield number, where, item


def beside(path: Path, value: str) -> Path:
    """``value`` as a path, relative paths taken from ``path``'s folder."""
    return Path(value) if Path(value).is_absolute() else path.parent / value
