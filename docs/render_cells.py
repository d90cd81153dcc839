"""Markdown cells and values as docs/render.py's generated tables write them (one line per cell,
numbers without trailing zeros, shapes with N for a dynamic dimension)."""

from __future__ import annotations

import math


def md_cell(text: str) -> str:
    """Text for a Markdown table cell on one line: pipes escaped, ``<`` kept visible (not an HTML tag)."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def md_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_number(value) -> str:
    from rfad.contract import MAX_SEED

    if value == MAX_SEED:
        return "2^63−1"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fmt_range(bounds: tuple) -> str:
    return f"{fmt_number(bounds[0])}–{fmt_number(bounds[1])}"


def fmt_pixels(count: int) -> str:
    side = math.isqrt(count)
    return f"{side}×{side} px" if side * side == count else f"{count} pixels"


def fmt_mib(count: int) -> str:
    return f"{count / 2**20:g} MiB"


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "`[" + ", ".join("N" if dim == -1 else str(dim) for dim in shape) + "]`"
