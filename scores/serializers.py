"""Shapes of what comes in and goes out. Input fields are strict: ids are JSON integers in
PostgreSQL's ``integer`` range, ``correct`` is a JSON boolean (0 and 1 accepted)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from scores.models import MAX_ID
from scores.services import Write


class InvalidValue(ValueError):
    """A value a field refuses; the message says why."""


ID_INVALID = "Must be an integer."
ID_OUT_OF_RANGE = f"Must be an integer from 1 to {MAX_ID}."
BOOLEAN_INVALID = "Must be a boolean (true or false)."


def parse_id(value: Any) -> int:
    """A JSON number with an integral value from 1 to 2147483647 (``5`` or ``5.0``, as JavaScript
    clients may send); strings, fractions and booleans are refused.

    Raises:
        InvalidValue: anything else.
    """
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise InvalidValue(ID_INVALID)
    if not 1 <= value <= MAX_ID:
        raise InvalidValue(ID_OUT_OF_RANGE)
    return value


ATTEMPT_ID_INVALID = "Must be a UUID, e.g. 3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b."
ATTEMPTED_AT_INVALID = "Must be an ISO 8601 timestamp, e.g. 2026-11-26T14:24:20Z."
ATTEMPTED_AT_OUT_OF_RANGE = "Must be from year 1 to 9999 once converted to UTC."
MAX_CLOCK_SKEW = timedelta(minutes=5)


def parse_attempt_id(value: Any) -> uuid.UUID:
    """A client-chosen UUID (any version, any standard spelling).

    Raises:
        InvalidValue: anything else.
    """
    if not isinstance(value, str):
        raise InvalidValue(ATTEMPT_ID_INVALID)
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise InvalidValue(ATTEMPT_ID_INVALID) from exc


def parse_attempted_at(value: Any) -> datetime:
    """An ISO 8601 timestamp (UTC when it has no offset), not in the future beyond clock skew:
    an attempt dated ahead would stop every later attempt from applying. Returned in UTC, so
    PostgreSQL never sees an offset it refuses (beyond 15:59); an instant outside years 1 to
    9999 in UTC (which PostgreSQL would store and Python never read back) is refused.

    Raises:
        InvalidValue: anything else.
    """
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well formed but impossible, such as 2026-02-30
        parsed = None
    if parsed is None:
        raise InvalidValue(ATTEMPTED_AT_INVALID)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidValue(ATTEMPTED_AT_OUT_OF_RANGE) from exc
    if parsed > timezone.now() + MAX_CLOCK_SKEW:
        raise InvalidValue("Must not be in the future.")
    return parsed


def parse_correct(value: Any) -> bool:
    """A JSON boolean (or 0/1); null, other numbers and strings are refused.

    Raises:
        InvalidValue: anything else.
    """
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise InvalidValue(BOOLEAN_INVALID)


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdField(serializers.Field):
    """See ``parse_id``."""

    def to_internal_value(self, data: Any) -> int:
        try:
            return parse_id(data)
        except InvalidValue as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value: int) -> int:
        return value


@extend_schema_field({"type": "string", "format": "uuid"})
class AttemptIdField(serializers.Field):
    """See ``parse_attempt_id``."""

    def to_internal_value(self, data: Any) -> uuid.UUID:
        try:
            return parse_attempt_id(data)
        except InvalidValue as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value: uuid.UUID) -> str:
        return str(value)


@extend_schema_field({"type": "string", "format": "date-time"})
class AttemptedAtField(serializers.Field):
    """See ``parse_attempted_at``."""

    def to_internal_value(self, data: Any) -> datetime:
        try:
            return parse_attempted_at(data)
        except InvalidValue as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


@extend_schema_field({"type": "boolean"})
class StrictBooleanField(serializers.Field):
    """See ``parse_correct``."""

    def to_internal_value(self, data: Any) -> bool:
        try:
            return parse_correct(data)
        except InvalidValue as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value: bool) -> bool:
        return value


class ScoreSerializer(serializers.Serializer):
    """The Score resource as the API returns it."""

    id = serializers.IntegerField(read_only=True)
    user_id = serializers.IntegerField(read_only=True, min_value=1, max_value=MAX_ID)
    exercise_id = serializers.IntegerField(read_only=True, min_value=1, max_value=MAX_ID)
    correct = serializers.BooleanField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    attempts = serializers.IntegerField(read_only=True, help_text="Applied attempts.")
    first_correct_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="attempted_at of the first correct attempt."
    )


class AttemptFieldsMixin(serializers.Serializer):
    """The optional history fields of every write body."""

    attempt_id = AttemptIdField(
        required=False,
        help_text="Client-chosen UUID: a retry with the same id and content is answered as the "
        "first write was and changes nothing; other content is a 409.",
    )
    attempted_at = AttemptedAtField(
        required=False,
        help_text="When the attempt happened (default: now). An attempt older than the score's "
        "latest applied one is logged with applied=false and leaves the score unchanged.",
    )


class AttemptSerializer(serializers.Serializer):
    """One entry of a score's attempt log."""

    id = serializers.IntegerField()
    score_id = serializers.IntegerField()
    user_id = serializers.IntegerField()
    exercise_id = serializers.IntegerField()
    correct = serializers.BooleanField()
    attempted_at = serializers.DateTimeField()
    recorded_at = serializers.DateTimeField()
    recorded_by = serializers.CharField(help_text="The user id, or the staff account's username.")
    attempt_id = serializers.UUIDField(allow_null=True)
    applied = serializers.BooleanField(help_text="False: older than the applied attempts.")


class ScoreWriteSerializer(AttemptFieldsMixin):
    """Body of ``POST /scores`` and ``PATCH /scores``."""

    exercise_id = IdField()
    correct = StrictBooleanField()
    user_id = IdField(
        required=False,
        help_text="Whose score (default: the caller); another user needs a privileged caller.",
    )


class ScoreCorrectSerializer(AttemptFieldsMixin):
    """Body of ``PUT /scores/user/{exercise_id}``."""

    correct = StrictBooleanField()
    user_id = IdField(
        required=False,
        help_text="Whose score (privileged callers only; defaults to the caller).",
    )


class ScoreUpdateSerializer(AttemptFieldsMixin):
    """Body of ``PUT``/``PATCH /scores/{id}``: only ``correct`` changes; the ids may be repeated
    but not changed."""

    correct = StrictBooleanField()
    user_id = IdField(required=False, help_text="If given, must be the score's own user_id.")
    exercise_id = IdField(
        required=False, help_text="If given, must be the score's own exercise_id."
    )


class ExerciseIdSerializer(serializers.Serializer):
    """The ``exercise_id`` path segment, checked like a body field."""

    exercise_id = IdField()


class BulkItemSerializer(AttemptFieldsMixin):
    user_id = IdField()
    exercise_id = IdField()
    correct = StrictBooleanField()


class BulkSerializer(serializers.Serializer):
    """Body of ``POST /scores/bulk`` (validated by ``scores.services.parse_bulk``, not by DRF:
    a thousand items through DRF fields would cost more than writing them)."""

    scores = BulkItemSerializer(
        many=True, help_text="1 to 1000 scores, each (user, exercise) once."
    )


class BulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()


class SummarySerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    attempted = serializers.IntegerField(help_text="Exercises with a score.")
    correct = serializers.IntegerField()
    incorrect = serializers.IntegerField()
    last_updated_at = serializers.DateTimeField(allow_null=True)


class ExerciseStatsSerializer(serializers.Serializer):
    exercise_id = serializers.IntegerField()
    attempted = serializers.IntegerField(help_text="Users with a score for the exercise.")
    correct = serializers.IntegerField(help_text="Users whose score is correct.")
    success_rate = serializers.FloatField(help_text="correct / attempted, rounded to 4 places.")
    first_try_correct = serializers.IntegerField(help_text="Users whose first attempt was correct.")
    avg_attempts_to_correct = serializers.FloatField(
        allow_null=True,
        help_text="Mean applied attempts up to the first correct one, among users who got it "
        "right (null if nobody did), rounded to 4 places.",
    )


class ErrorSerializer(serializers.Serializer):
    """Every error response."""

    detail = serializers.CharField()
    errors = serializers.DictField(  # type: ignore[assignment]  # schema only, never validated
        required=False,
        help_text="Validation errors: field name -> list of messages (non-field problems under "
        "non_field_errors); the items of a list are keyed by their index, e.g. "
        '{"scores": {"3": {"user_id": ["Must be an integer."]}}}.',
    )


class PingSerializer(serializers.Serializer):
    status = serializers.CharField()
    message = serializers.CharField()


class StatusSerializer(serializers.Serializer):
    status = serializers.CharField()


BULK_MAX = 1000


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


BULK_FIELDS = (
    ("user_id", parse_id, True),
    ("exercise_id", parse_id, True),
    ("correct", parse_correct, True),
    ("attempt_id", parse_attempt_id, False),
    ("attempted_at", parse_attempted_at, False),
)


def parse_bulk(data: Any) -> list[Write]:
    """The (user_id, exercise_id, correct) items of a bulk body, validated like single writes.

    Raises:
        ValidationError: keyed ``{"scores": {"<index>": {"<field>": [...]}}}`` for bad items,
            repeated (user, exercise) pairs and repeated attempt_ids, or ``{"scores": [...]}``
            for a bad list.
    """
    if not isinstance(data, dict):
        raise serializers.ValidationError(
            {"non_field_errors": [f"Expected an object, got {json_type(data)}."]}
        )
    if "scores" not in data:
        raise serializers.ValidationError({"scores": ["This field is required."]})
    items = data["scores"]
    if not isinstance(items, list):
        message = (
            "This field may not be null."
            if items is None
            else f"Expected a list of scores, got {json_type(items)}."
        )
        raise serializers.ValidationError({"scores": [message]})
    if len(items) > BULK_MAX:
        raise serializers.ValidationError(
            {"scores": [f"At most {BULK_MAX} scores per request (got {len(items)}): split it."]}
        )
    errors: dict[str, dict[str, list[str]]] = {}
    first_index: dict[tuple[int, int], int] = {}
    first_attempt: dict[uuid.UUID, int] = {}
    parsed: list[Write] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors[str(index)] = {"non_field_errors": ["Expected an object."]}
            continue
        fields: dict[str, Any] = {}
        problems: dict[str, list[str]] = {}
        for name, parse, required in BULK_FIELDS:
            if name not in item:
                if required:
                    problems[name] = ["This field is required."]
            elif item[name] is None:
                problems[name] = ["This field may not be null."]
            else:
                try:
                    fields[name] = parse(item[name])
                except InvalidValue as exc:
                    problems[name] = [str(exc)]
        if problems:
            errors[str(index)] = problems
            continue
        key = (fields["user_id"], fields["exercise_id"])
        if key in first_index:
            errors[str(index)] = {
                "non_field_errors": [f"Same user_id and exercise_id as item {first_index[key]}."]
            }
            continue
        attempt_id = fields.get("attempt_id")
        if attempt_id is not None and attempt_id in first_attempt:
            errors[str(index)] = {
                "attempt_id": [f"Same attempt_id as item {first_attempt[attempt_id]}."]
            }
            continue
        first_index[key] = index
        if attempt_id is not None:
            first_attempt[attempt_id] = index
        parsed.append(Write(**fields))
    if errors:
        raise serializers.ValidationError({"scores": errors})
    return parsed
