"""Scores read from a CSV file (``manage.py import_scores``), each row checked with the API's
rules before anything is written.

The header names the columns, in any order: ``user_id``, ``exercise_id`` and ``correct`` are
required, ``attempted_at`` and ``attempt_id`` optional (an empty value means absent). Ids are
decimal integers from 1 to 2147483647; ``correct`` is ``true``, ``false``, ``1`` or ``0`` in any
case; ``attempted_at`` is ISO 8601 (UTC when it has no offset) and not in the future;
``attempt_id`` a UUID. As in ``POST /scores/bulk``, a (user_id, exercise_id) pair may appear
once: a repeat is an invalid row naming the first. So may an ``attempt_id``.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from django.utils import timezone

from scores.serializers import (
    ID_INVALID,
    MAX_CLOCK_SKEW,
    InvalidValue,
    parse_attempt_id,
    parse_attempted_at,
    parse_id,
)

if TYPE_CHECKING:
    from _csv import Reader

REQUIRED_COLUMNS = ("user_id", "exercise_id", "correct")
OPTIONAL_COLUMNS = ("attempted_at", "attempt_id")
HEADER_HELP = "user_id,exercise_id,correct[,attempted_at][,attempt_id] (any order)"
CORRECT_VALUES = {"true": True, "false": False, "1": True, "0": False}
CORRECT_INVALID = "Must be true, false, 1 or 0 (any case)."
REQUIRED = "This field is required."

# A valid row's values: user_id, exercise_id, correct, attempt_id, attempted_at (the order of
# ``scores.services.Write``).
Fields = tuple[int, int, bool, uuid.UUID | None, datetime | None]


class BadFile(ValueError):
    """The file cannot be read as scores at all; the message says why, in one line."""


def parse_id_text(text: str) -> int:
    """An id written as decimal digits, checked like the API's (``parse_id``).

    Raises:
        InvalidValue: empty, not an integer, or out of range.
    """
    if not text:
        raise InvalidValue(REQUIRED)
    if not (text.isascii() and (text.isdigit() or (text[0] == "-" and text[1:].isdigit()))):
        raise InvalidValue(ID_INVALID)
    return parse_id(int(text))


def parse_csv_correct(text: str) -> bool:
    """``true``/``false``/``1``/``0``, any case.

    Raises:
        InvalidValue: anything else.
    """
    if not text:
        raise InvalidValue(REQUIRED)
    value = CORRECT_VALUES.get(text.lower())
    if value is None:
        raise InvalidValue(CORRECT_INVALID)
    return value


def parse_csv_attempted_at(text: str, latest: datetime) -> datetime:
    """``parse_attempted_at``, without its clock read for the common row: an ISO 8601 timestamp
    in UTC (``Z``, ``+00:00`` or no offset) not after ``latest``, a bound that
    ``parse_attempted_at`` would have computed earlier, is accepted as it would be. Any other
    value (another offset, the future, another spelling, garbage) is left to it.

    Raises:
        InvalidValue: not a timestamp, or in the future.
    """
    try:
        moment = datetime.fromisoformat(text)  # what parse_datetime tries first
    except ValueError:
        return parse_attempted_at(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.utcoffset():
        return parse_attempted_at(text)
    if moment > latest:
        return parse_attempted_at(text)  # decides with the clock as it is now
    return moment


def header_columns(header: list[str] | None) -> dict[str, int]:
    """The position of each known column in ``header``.

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
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise BadFile(
            f"missing column(s) {', '.join(missing)} in the header; expected {HEADER_HELP}"
        )
    return {name: header.index(name) for name in header}


def read_scores(file: TextIO) -> Iterator[tuple[int, Fields | str]]:
    """Each data row of ``file`` as ``(line number, its values)`` or ``(line number, why it is
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


def _rows(reader: Reader, columns: dict[str, int]) -> Iterator[tuple[int, Fields | str]]:
    user_at, exercise_at, correct_at = (columns[name] for name in REQUIRED_COLUMNS)
    attempted_at_at = columns.get("attempted_at")
    attempt_id_at = columns.get("attempt_id")
    width = len(columns)
    first_line: dict[int, int] = {}  # (user_id << 31 | exercise_id) -> line
    first_attempt_line: dict[uuid.UUID, int] = {}
    latest = timezone.now() + MAX_CLOCK_SKEW  # the clock only moves on: later bounds are later
    for row in reader:
        line = reader.line_num
        if len(row) != width:
            if row:
                yield line, f"expected {width} values, got {len(row)}"
            continue
        problems = []
        try:
            user_id = parse_id_text(row[user_at])
        except InvalidValue as exc:
            problems.append(f"user_id: {exc}")
        try:
            exercise_id = parse_id_text(row[exercise_at])
        except InvalidValue as exc:
            problems.append(f"exercise_id: {exc}")
        try:
            correct = parse_csv_correct(row[correct_at])
        except InvalidValue as exc:
            problems.append(f"correct: {exc}")
        attempted_at = None
        if attempted_at_at is not None and row[attempted_at_at]:
            try:
                attempted_at = parse_csv_attempted_at(row[attempted_at_at], latest)
            except InvalidValue as exc:
                problems.append(f"attempted_at: {exc}")
        attempt_id = None
        if attempt_id_at is not None and row[attempt_id_at]:
            try:
                attempt_id = parse_attempt_id(row[attempt_id_at])
            except InvalidValue as exc:
                problems.append(f"attempt_id: {exc}")
        if problems:
            yield line, "; ".join(problems)
            continue
        key = user_id << 31 | exercise_id
        first = first_line.get(key)
        if first is not None:
            yield line, f"same user_id and exercise_id as line {first}"
            continue
        if attempt_id is not None:
            first = first_attempt_line.get(attempt_id)
            if first is not None:
                yield line, f"same attempt_id as line {first}"
                continue
            first_attempt_line[attempt_id] = line
        first_line[key] = line
        yield line, (user_id, exercise_id, correct, attempt_id, attempted_at)
