"""A score write as clients send it, described once: which fields it has, how each is read from
JSON or from text, and the rules between them. Every path that writes a score reads its input
here: the API's bodies (through ``scores.serializers``), bulk items, CSV rows
(``scores.csv_import``) and the admin's form.

``WRITE_FIELDS`` is the description; ``parse_fields`` reads one body or row with it,
collecting every problem under its field's name, then applies the rules between fields
(``points`` and ``max_points`` together, ``correct`` derived from them when left out);
``ItemChecks`` refuses what may appear only once in a batch (a (user, exercise) pair, an
attempt id of one user).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from scores.validation import (
    MAX_POINTS,
    NULL,
    REASON_MAX,
    REQUIRED,
    InvalidValue,
    parse_attempted_at,
    parse_bool,
    parse_bool_text,
    parse_id,
    parse_id_text,
    parse_points,
    parse_points_text,
    parse_reason,
    parse_reason_text,
    parse_uuid,
    parse_uuid_text,
)

BULK_MAX = 1000


@dataclass(frozen=True)
class Write:
    """One attempt at a score, validated: whose, which exercise, the result (``correct``, and
    ``points`` of ``max_points`` or neither), and its history fields (``attempt_id``,
    ``attempted_at``, ``reason``: None when the client left them out)."""

    user_id: int
    exercise_id: int
    correct: bool
    attempt_id: uuid.UUID | None = None
    attempted_at: datetime | None = None
    points: Decimal | None = None
    max_points: Decimal | None = None
    reason: str | None = None

    def differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """The fields in which this write differs from the logged attempt with its
        ``attempt_id`` (``attempted_at`` left out differs from nothing: it defaulted to the
        moment of the first write)."""
        return [
            spec.name
            for spec in WRITE_FIELDS.values()
            if spec.compared != "never"
            and not (spec.compared == "if_given" and getattr(self, spec.name) is None)
            and getattr(self, spec.name) != recorded[spec.name]
        ]


@dataclass(frozen=True)
class WriteField:
    """One field of a score write.

    ``parse`` reads it from a JSON value and ``parse_text`` from text (a CSV cell); both raise
    ``InvalidValue``. ``compared``: whether a replay with the same ``attempt_id`` must repeat
    it (``if_given``: only when given). ``schema`` and ``help`` describe it in the OpenAPI
    schema.
    """

    name: str
    parse: Callable[[Any], Any]
    parse_text: Callable[[str], Any]
    schema: dict[str, Any]
    help: str = ""
    compared: Literal["always", "if_given", "never"] = "always"
    example: Any = None


ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 2_147_483_647}

WRITE_FIELDS: dict[str, WriteField] = {
    spec.name: spec
    for spec in (
        WriteField(
            "user_id",
            parse_id,
            parse_id_text,
            ID_SCHEMA,
            "Whose score (default: the caller); another user needs a privileged caller.",
            example=4,
        ),
        WriteField("exercise_id", parse_id, parse_id_text, ID_SCHEMA, "The exercise.", example=5),
        WriteField(
            "correct",
            parse_bool,
            parse_bool_text,
            {"type": "boolean"},
            "Whether the attempt was right (JSON true/false, or 0/1).",
            example=True,
        ),
        WriteField(
            "attempted_at",
            parse_attempted_at,
            parse_attempted_at,
            {"type": "string", "format": "date-time"},
            "When the attempt happened, ISO 8601 (default: now; at most 5 minutes ahead). Under "
            "the latest policy, an attempt older than the score's latest applied one is logged "
            "with applied=false and leaves the score unchanged.",
            compared="if_given",
            example="2026-11-26T14:24:20Z",
        ),
        WriteField(
            "attempt_id",
            parse_uuid,
            parse_uuid_text,
            {"type": "string", "format": "uuid"},
            "Client-chosen UUID, scoped to the score's user: a retry with the same id and "
            "content is answered as the first write was and changes nothing; other content "
            "is a 409.",
            compared="never",
            example="3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b",
        ),
        WriteField(
            "points",
            parse_points,
            parse_points_text,
            {"type": "number", "minimum": 0, "maximum": MAX_POINTS, "multipleOf": 0.01},
            "Points scored, at most 2 decimal places, 0 to max_points; with max_points or "
            "not at all. With them, correct may be left out: it is then points == max_points.",
            example=7,
        ),
        WriteField(
            "max_points",
            parse_points,
            parse_points_text,
            {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_POINTS, "multipleOf": 0.01},
            "Points available, more than 0, at most 1,000,000, at most 2 decimal places.",
            example=10,
        ),
        WriteField(
            "reason",
            parse_reason,
            parse_reason_text,
            {"type": "string", "maxLength": REASON_MAX},
            f"Why this write was made (a regrade, a correction), at most {REASON_MAX} "
            "characters, no control characters; an empty one is none. Kept in the attempt "
            "log, which the score's user can read.",
            compared="if_given",
            example="Regraded after the test suite was fixed",
        ),
    )
}
POINTS_PAIR = ("points", "max_points")
DERIVED = ("correct",)  # required, unless the rules between fields give it


class WriteInvalid(ValueError):
    """A body or row with problems: ``errors`` maps each field (or ``non_field_errors``) to its
    messages, in the API's error shape."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


def parse_fields(
    data: Any,
    *,
    required: Collection[str],
    optional: Collection[str],
    text: bool = False,
    not_an_object: str | None = None,
) -> dict[str, Any]:
    """The values of the named write fields in ``data`` (a parsed JSON object, or a CSV row of
    texts with ``text=True``; an empty cell is a value left out).

    Raises:
        WriteInvalid: ``data`` is not an object (``not_an_object`` says so, else "Expected an
            object, got <type>."), or any field is missing, null or invalid.
    """
    if not isinstance(data, Mapping):
        message = not_an_object or f"Expected an object, got {json_type(data)}."
        raise WriteInvalid({"non_field_errors": [message]})
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, spec in WRITE_FIELDS.items():
        is_required = name in required
        if not is_required and name not in optional:
            continue
        raw = data.get(name)
        if raw is None or (text and raw == ""):
            if name not in data or text:
                if is_required and name != "correct":
                    errors[name] = [REQUIRED]
            else:
                errors[name] = [NULL]
            continue
        try:
            values[name] = (spec.parse_text if text else spec.parse)(raw)
        except InvalidValue as exc:
            errors[name] = [str(exc)]
    points_rules(values, errors, correct_required="correct" in required)
    if errors:
        raise WriteInvalid(errors)
    return values


def points_rules(
    values: dict[str, Any], errors: dict[str, list[str]], *, correct_required: bool
) -> None:
    """The rules between fields: ``points`` and ``max_points`` both or neither, ``points`` no
    more than ``max_points``, ``max_points`` more than 0; ``correct``, when required and left
    out, is ``points == max_points``."""
    given = [name for name in POINTS_PAIR if name in values]
    if len(given) == 1:
        other = POINTS_PAIR[1 - POINTS_PAIR.index(given[0])]
        errors.setdefault(other, [f"Required with {given[0]}."])
    elif given:
        points, max_points = values["points"], values["max_points"]
        if max_points == 0:
            errors.setdefault("max_points", ["Must be more than 0."])
        elif points > max_points:
            errors.setdefault("points", ["Must not be more than max_points."])
    if correct_required and "correct" not in values and "correct" not in errors:
        if len(given) == 2:
            values["correct"] = values["points"] == values["max_points"]
        elif not any(name in errors for name in POINTS_PAIR):
            errors["correct"] = [REQUIRED]


ITEM_FIELDS = ("user_id", "exercise_id", "correct")
ITEM_OPTIONAL = ("attempted_at", "attempt_id", *POINTS_PAIR, "reason")


def parse_item(data: Any, *, text: bool = False) -> Write:
    """One bulk item or CSV row: a whole write, ``user_id`` included.

    Raises:
        WriteInvalid: as ``parse_fields``.
    """
    return Write(
        **parse_fields(
            data,
            required=ITEM_FIELDS,
            optional=ITEM_OPTIONAL,
            text=text,
            not_an_object="Expected an object.",
        )
    )


@dataclass
class ItemChecks:
    """What may appear once in one batch (bulk body, CSV file): a (user, exercise) pair, and an
    ``attempt_id`` per user. ``repeated`` answers with the first place's label, or None."""

    pairs: dict[tuple[int, int], str] = field(default_factory=dict)
    attempt_ids: dict[tuple[int, uuid.UUID], str] = field(default_factory=dict)

    def repeated(self, write: Write, label: str) -> tuple[str, str] | None:
        """``(field, label of the first)`` if ``write`` repeats an earlier item (``field`` is
        ``non_field_errors`` for the pair), else None, and ``write`` is remembered as ``label``
        ("item 3", "line 7")."""
        pair = (write.user_id, write.exercise_id)
        if pair in self.pairs:
            return "non_field_errors", self.pairs[pair]
        if write.attempt_id is not None:
            key = (write.user_id, write.attempt_id)
            if key in self.attempt_ids:
                return "attempt_id", self.attempt_ids[key]
            self.attempt_ids[key] = label
        self.pairs[pair] = label
        return None


REPEATED = {
    "non_field_errors": "Same user_id and exercise_id as {first}.",
    "attempt_id": "Same attempt_id as {first}.",
}


def parse_bulk(data: Any) -> list[Write]:
    """The items of a bulk body ``{"scores": [...]}``, each read by ``parse_item``.

    Raises:
        WriteInvalid: keyed ``{"scores": {"<index>": {"<field>": [...]}}}`` for bad or repeated
            items, or ``{"scores": [...]}`` for a missing or bad list.
    """
    if not isinstance(data, Mapping):
        raise WriteInvalid({"non_field_errors": [f"Expected an object, got {json_type(data)}."]})
    if "scores" not in data:
        raise WriteInvalid({"scores": [REQUIRED]})
    items = data["scores"]
    if not isinstance(items, list):
        message = NULL if items is None else f"Expected a list of scores, got {json_type(items)}."
        raise WriteInvalid({"scores": [message]})
    if len(items) > BULK_MAX:
        raise WriteInvalid(
            {"scores": [f"At most {BULK_MAX} scores per request (got {len(items)}): split it."]}
        )
    errors: dict[str, dict[str, list[str]]] = {}
    checks = ItemChecks()
    writes: list[Write] = []
    for index, raw in enumerate(items):
        try:
            write = parse_item(raw)
        except WriteInvalid as exc:
            errors[str(index)] = exc.errors
            continue
        repeated = checks.repeated(write, f"item {index}")
        if repeated is not None:
            name, first = repeated
            errors[str(index)] = {name: [REPEATED[name].format(first=first)]}
            continue
        writes.append(write)
    if errors:
        raise WriteInvalid({"scores": errors})
    return writes


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
