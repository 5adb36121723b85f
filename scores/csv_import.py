"""Scores read from a CSV file (``manage.py import_scores``), each row checked with the API's
rules (``scores.writes.parse_item``, the validation bulk items go through) before anything is
written.

The header names the columns, in any order: ``user_id``, ``exercise_id`` and ``correct`` are
required (``correct`` not with ``points`` and ``max_points``, which then give it), the other
write fields optional (an empty value means absent). Values are text: ids
are decimal integers from 1 to 2147483647, ``correct`` is ``true``, ``false``, ``1`` or ``0`` in
any case. As in ``POST /scores/bulk``, a (user_id, exercise_id) pair may appear once, and an
``attempt_id`` once per user: a repeat is an invalid row naming the first.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from scores.writes import (
    DERIVED,
    ITEM_FIELDS,
    ITEM_OPTIONAL,
    POINTS_PAIR,
    ItemChecks,
    Write,
    WriteInvalid,
    parse_item,
)

if TYPE_CHECKING:
    from _csv import Reader

REQUIRED_COLUMNS = ITEM_FIELDS
OPTIONAL_COLUMNS = ITEM_OPTIONAL
WITHOUT_CORRECT = POINTS_PAIR  # correct may be left out when these columns give it
HEADER_HELP = f"{','.join(REQUIRED_COLUMNS)}[,{'][,'.join(OPTIONAL_COLUMNS)}] (any order)"
REPEATED = {
    "non_field_errors": "same user_id and exercise_id as {first}",
    "attempt_id": "same attempt_id as {first}",
}


class BadFile(ValueError):
    """The file cannot be read as scores at all; the message says why, in one line."""


def header_columns(header: list[str] | None) -> list[str]:
    """The header's column names, checked.

    Raises:
        BadFile: no header, a missing required column, an unknown or repeated one.
    """
    if not header:
        raise BadFile(f"the file is empty; expected the header {HEADER_HELP}")
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    unknown = [name for name in header if name not in known]
    if unknown:
        raise BadFile(
            f"unknown column(s) {', '.join(map(repr, unknown))} in the header; "
            f"expected {HEADER_HELP}"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise BadFile(f"column(s) {', '.join(repeated)} appear more than once in the header")
    required: tuple[str, ...] = REQUIRED_COLUMNS
    if all(name in header for name in WITHOUT_CORRECT):
        required = tuple(name for name in REQUIRED_COLUMNS if name not in DERIVED)
    missing = [name for name in required if name not in header]
    if missing:
        raise BadFile(
            f"missing column(s) {', '.join(missing)} in the header; expected {HEADER_HELP}"
        )
    return header


def read_scores(file: TextIO) -> Iterator[tuple[int, Write | str]]:
    """Each data row of ``file`` as ``(line number, its write)`` or ``(line number, why it is
    invalid)``; blank lines are skipped. Deterministic: reading the same file twice gives the
    same answers (so it can be checked in one pass and written in another).

    Memory grows with the number of valid rows (about 100 bytes each, for the repeat checks).

    Raises:
        BadFile: a bad header, or text the CSV reader cannot split (the line is named).
    """
    reader = csv.reader(file, strict=True)
    try:
        columns = header_columns(next(reader, None))
        yield from _rows(reader, columns)
    except csv.Error as exc:
        raise BadFile(f"line {reader.line_num}: {exc}") from exc


def _rows(reader: Reader, columns: list[str]) -> Iterator[tuple[int, Write | str]]:
    width = len(columns)
    checks = ItemChecks()
    for row in reader:
        line = reader.line_num
        if len(row) != width:
            if row:
                yield line, f"expected {width} values, got {len(row)}"
            continue
        try:
            write = parse_item(dict(zip(columns, row, strict=True)), text=True)
        except WriteInvalid as exc:
            yield (
                line,
                "; ".join(
                    f"{field}: {message}"
                    for field, messages in exc.errors.items()
                    for message in messages
                ),
            )
            continue
        repeated = checks.repeated(write, f"line {line}")
        if repeated is not None:
            name, first = repeated
            yield line, REPEATED[name].format(first=first)
            continue
        yield line, write
