"""The CSV export: streamed, so memory does not grow with the number of rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any

CSV_HEADER = "id,user_id,exercise_id,correct,created_at,updated_at\n"
LINES_PER_CHUNK = 1000


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def csv_chunks(rows: Iterable[tuple[Any, ...]]) -> Iterator[bytes]:
    """The header, then ``LINES_PER_CHUNK`` rows per chunk (all values are numbers, booleans
    and timestamps, so nothing needs quoting)."""
    yield CSV_HEADER.encode()
    iterator = iter(rows)
    while chunk := list(islice(iterator, LINES_PER_CHUNK)):
        yield "".join(
            f"{id_},{user_id},{exercise_id},{'true' if correct else 'false'},"
            f"{_iso(created_at)},{_iso(updated_at)}\n"
            for id_, user_id, exercise_id, correct, created_at, updated_at in chunk
        ).encode()
