"""The one validation of what clients send: ids, booleans, timestamps, UUIDs, points and reasons,
as JSON values (request bodies) or as text (query parameters, path segments, CSV cells, admin
forms).

Every input path calls these parsers, so a value means the same wherever it arrives and a bad
one is refused with the same message. They are strict on purpose: ASCII digits only
(``int()`` alone would take ``"\\x1f5\\t"`` or a full-width digit), no control characters
anywhere (U+0000-U+001F), timestamps in ISO 8601's extended calendar form only.

Each parser raises ``InvalidValue`` whose message is what the API answers under the field's
name.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

MAX_ID = 2_147_483_647  # PostgreSQL ``integer``: user and exercise ids
MAX_PK = 2**63 - 1  # PostgreSQL ``bigint``: row ids (scores, attempts, events)
MAX_CLOCK_SKEW = timedelta(minutes=5)

ID_INVALID = "Must be an integer."
ID_OUT_OF_RANGE = f"Must be an integer from 1 to {MAX_ID}."
BOOLEAN_INVALID = "Must be a boolean (true or false)."
BOOLEAN_TEXT_INVALID = "Must be true, false, 1 or 0 (any case)."
UUID_INVALID = "Must be a UUID, e.g. 3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b."
TIMESTAMP_INVALID = "Must be an ISO 8601 timestamp, e.g. 2026-11-26T14:24:20Z."
TIMESTAMP_OUT_OF_RANGE = "Must be from year 1 to 9999 once converted to UTC."
TIMESTAMP_IN_FUTURE = "Must not be in the future."
REQUIRED = "This field is required."
NULL = "This field may not be null."


class InvalidValue(ValueError):
    """A value a field refuses; the message says why, in the API's words."""


_DIGITS = re.compile(r"-?[0-9]{1,4000}", re.ASCII)
# ISO 8601 extended calendar form: a date, optionally a time (minutes, seconds and up to 9
# fractional digits, as Go and Java print them; kept to microseconds) and an offset.
_TIMESTAMP = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ](?P<minutes>[0-9]{2}:[0-9]{2})"
    r"(?::(?P<seconds>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<offset>Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?",
    re.ASCII,
)
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


# --- ids ------------------------------------------------------------------------------------


def parse_id(value: Any) -> int:
    """A user or exercise id from JSON: an integral number from 1 to 2147483647 (``5`` or
    ``5.0``, as JavaScript clients may send); strings, fractions and booleans are refused."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise InvalidValue(ID_INVALID)
    if not 1 <= value <= MAX_ID:
        raise InvalidValue(ID_OUT_OF_RANGE)
    return value


def parse_id_text(text: str) -> int:
    """A user or exercise id written as decimal ASCII digits (query, path, CSV, admin)."""
    if not _DIGITS.fullmatch(text):
        raise InvalidValue(ID_INVALID)
    return parse_id(int(text))


def parse_path_id(text: str) -> int:
    """A user or exercise id in a URL path segment: unsigned ASCII digits."""
    if text.startswith("-"):
        raise InvalidValue(ID_INVALID)
    return parse_id_text(text)


def parse_pk_text(text: str) -> int | None:
    """A row id (``/scores/{id}``) as ASCII digits, or None when it cannot name a row (out of
    ``bigint``'s range): such a row does not exist, so the caller answers 404, not 400."""
    if not _DIGITS.fullmatch(text):
        raise InvalidValue(ID_INVALID)
    value = int(text)
    return value if 0 < value <= MAX_PK else None


def parse_range_text(text: str, *, low: int, high: int) -> int:
    """An integer from ``low`` to ``high`` written as ASCII digits."""
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise InvalidValue(f"Must be an integer from {low} to {high}.")
    return int(text)


def parse_seconds_text(text: str, *, maximum: int) -> float:
    """A number of seconds from 0 to ``maximum`` (``2`` or ``2.5``)."""
    if not re.fullmatch(r"[0-9]{1,6}(?:\.[0-9]{1,6})?", text, re.ASCII) or float(text) > maximum:
        raise InvalidValue(f"Must be a number of seconds from 0 to {maximum}.")
    return float(text)


def parse_count_text(text: str, *, maximum: int) -> int:
    """A positive count (``page_size``, ``limit``) as ASCII digits, capped at ``maximum``."""
    if not _DIGITS.fullmatch(text) or int(text) < 1:
        raise InvalidValue("Must be a positive integer.")
    return min(int(text), maximum)


# --- booleans -------------------------------------------------------------------------------


def parse_bool(value: Any) -> bool:
    """A JSON boolean (or 0/1); null, other numbers and strings are refused."""
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise InvalidValue(BOOLEAN_INVALID)


_BOOLEAN_TEXTS = {"true": True, "false": False, "1": True, "0": False}


def parse_bool_text(text: str) -> bool:
    """``true``/``false``/``1``/``0`` in any case (query, CSV)."""
    value = _BOOLEAN_TEXTS.get(text.lower()) if text.isascii() else None
    if value is None:
        raise InvalidValue(BOOLEAN_TEXT_INVALID)
    return value


# --- UUIDs ----------------------------------------------------------------------------------


def parse_uuid(value: Any) -> uuid.UUID:
    """A UUID written as 32 hexadecimal digits, with or without the usual hyphens."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise InvalidValue(UUID_INVALID)
    return uuid.UUID(value)


parse_uuid_text = parse_uuid


# --- timestamps -----------------------------------------------------------------------------


def parse_timestamp(value: Any) -> datetime:
    """An ISO 8601 timestamp (date, optionally time and offset; UTC when it has no offset),
    returned in UTC: PostgreSQL refuses offsets beyond 15:59, and an instant outside years 1 to
    9999 once in UTC (which PostgreSQL would store and Python never read back) is refused."""
    if not isinstance(value, str):
        raise InvalidValue(TIMESTAMP_INVALID)
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        raise InvalidValue(TIMESTAMP_INVALID)
    text = match["date"]
    if match["minutes"]:
        text += "T" + match["minutes"] + ":" + (match["seconds"] or "00")
        if match["fraction"]:  # Python reads at most 6 digits: nanoseconds are cut, not refused
            text += "." + match["fraction"][:6].ljust(6, "0")
        text += _offset(match["offset"])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:  # well formed but impossible: month 13, February 30, 25:00
        raise InvalidValue(TIMESTAMP_INVALID) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidValue(TIMESTAMP_OUT_OF_RANGE) from exc


parse_timestamp_text = parse_timestamp


def _offset(offset: str | None) -> str:
    if not offset:
        return ""
    if offset in ("Z", "z"):
        return "+00:00"
    digits = offset[1:].replace(":", "")
    return f"{offset[0]}{digits[:2]}:{digits[2:] or '00'}"


def parse_attempted_at(value: Any) -> datetime:
    """When an attempt happened: a timestamp (``parse_timestamp``) not in the future beyond
    clock skew, since an attempt dated ahead would stop every later attempt from applying."""
    moment = parse_timestamp(value)
    if moment > timezone.now() + MAX_CLOCK_SKEW:
        raise InvalidValue(TIMESTAMP_IN_FUTURE)
    return moment


# --- points -----------------------------------------------------------------------------------

MAX_POINTS = Decimal(1_000_000)
POINTS_INVALID = "Must be a number with at most 2 decimal places."
POINTS_OUT_OF_RANGE = f"Must be from 0 to {MAX_POINTS:,}."
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,20})?", re.ASCII)


def parse_points(value: Any) -> Decimal:
    """Points from JSON: a number (not a string, not a boolean) with at most 2 decimal places,
    from 0 to 1,000,000, as an exact ``Decimal`` (a JSON parser's float is read back from its
    shortest representation, which is the number as written)."""
    if type(value) not in (int, float, Decimal):
        raise InvalidValue(POINTS_INVALID)
    return _points(Decimal(repr(value)) if type(value) is float else Decimal(value))


def parse_points_text(text: str) -> Decimal:
    """Points written in plain decimal notation (a CSV cell): ``7``, ``7.5``, ``7.25``."""
    if not _DECIMAL_TEXT.fullmatch(text):
        raise InvalidValue(POINTS_INVALID)
    return _points(Decimal(text))


def _points(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise InvalidValue(POINTS_INVALID)
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or (exponent < -2 and value != value.quantize(CENT)):
        raise InvalidValue(POINTS_INVALID)
    if not 0 <= value <= MAX_POINTS:
        raise InvalidValue(POINTS_OUT_OF_RANGE)
    return abs(value).quantize(CENT)  # abs: -0 is 0


CENT = Decimal("0.01")


# --- reasons ----------------------------------------------------------------------------------

REASON_MAX = 500
REASON_INVALID = "Must be a string."
REASON_TOO_LONG = f"Must be at most {REASON_MAX} characters."
REASON_CONTROL = "Must not contain control characters (U+0000-U+001F, U+007F-U+009F)."
REASON_ENCODING = "Must be valid Unicode text (no lone surrogates)."
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_reason(value: Any) -> str | None:
    """Why a write or a deletion was made, in a person's words: a string of at most 500
    characters (code points, as PostgreSQL counts them) on one line, with no control
    characters at all; an empty string is no reason (None). Stored in the attempt log and the
    audit log, never interpreted."""
    if not isinstance(value, str):
        raise InvalidValue(REASON_INVALID)
    if _CONTROL.search(value):
        raise InvalidValue(REASON_CONTROL)
    if len(value) > REASON_MAX:
        raise InvalidValue(REASON_TOO_LONG)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # "\ud800" in JSON parses, and no database stores it
        raise InvalidValue(REASON_ENCODING) from exc
    return value or None


parse_reason_text = parse_reason
