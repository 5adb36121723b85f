"""Shapes of what comes in and goes out. Input fields are strict: ids are JSON integers in
PostgreSQL's ``integer`` range, ``correct`` is a JSON boolean (0 and 1 accepted)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from scores.models import MAX_ID


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdField(serializers.Field):
    """A JSON number with an integral value from 1 to 2147483647 (``5`` or ``5.0``, as JavaScript
    clients may send); strings, fractions and booleans are refused."""

    default_error_messages = {
        "invalid": "Must be an integer.",
        "out_of_range": f"Must be an integer from 1 to {MAX_ID}.",
    }

    def to_internal_value(self, data: Any) -> int:
        if type(data) is float and data.is_integer():
            data = int(data)
        if type(data) is not int:
            self.fail("invalid")
        if not 1 <= data <= MAX_ID:
            self.fail("out_of_range")
        return data

    def to_representation(self, value: int) -> int:
        return value


@extend_schema_field({"type": "boolean"})
class StrictBooleanField(serializers.Field):
    """A JSON boolean (or 0/1); null, other numbers and strings are refused."""

    default_error_messages = {"invalid": "Must be a boolean (true or false)."}

    def to_internal_value(self, data: Any) -> bool:
        if data is True or data is False:
            return data
        if type(data) is int and data in (0, 1):
            return bool(data)
        self.fail("invalid")

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


class ScoreWriteSerializer(serializers.Serializer):
    """Body of ``POST /scores`` and ``PATCH /scores``."""

    exercise_id = IdField()
    correct = StrictBooleanField()
    user_id = IdField(
        required=False,
        help_text="Whose score (default: the caller); another user needs a privileged caller.",
    )


class ScoreCorrectSerializer(serializers.Serializer):
    """Body of ``PUT /scores/user/{exercise_id}``."""

    correct = StrictBooleanField()
    user_id = IdField(
        required=False,
        help_text="Whose score (privileged callers only; defaults to the caller).",
    )


class ScoreUpdateSerializer(serializers.Serializer):
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


class ErrorSerializer(serializers.Serializer):
    """Every error response."""

    detail = serializers.CharField()
    errors = serializers.DictField(  # type: ignore[assignment]  # schema only, never validated
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors per field (non-field problems under non_field_errors).",
    )


class PingSerializer(serializers.Serializer):
    status = serializers.CharField()
    message = serializers.CharField()


class StatusSerializer(serializers.Serializer):
    status = serializers.CharField()
