"""The CSV export: streamed, so memory does not grow with the number of rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any

from scores.selectors import EXPORT_FIELDS

CSV_HEADER = ",".join(EXPORT_FIELDS) + "\n"
LINES_PER_CHUNK = 1000


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _points(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def csv_chunks(rows: Iterable[tuple[Any, ...]]) -> Iterator[bytes]:
    """The header, then ``LINES_PER_CHUNK`` rows per chunk (all values are numbers, booleans
    and timestamps, so nothing needs quoting; points are empty for a score without them)."""
    yield CSV_HEADER.encode()
    iterator = iter(rows)
    while chunk := list(islice(iterator, LINES_PER_CHUNK)):
        yield "".join(
            f"{id_},{user},{exercise},{'true' if correct else 'false'},"
            f"{_iso(created_at)},{_iso(updated_at)},{_points(points)},{_points(max_points)}\n"
            for id_, user, exercise, correct, created_at, updated_at, points, max_points in chunk
        ).encode()
