"""Shapes of what comes in and goes out.

Write bodies are read by ``scores.writes`` (the one validation of a score write, shared with
bulk items, CSV rows and the admin): a write serializer declares which fields its body has and
which are required, for the schema, and validates through ``parse_fields``. Output serializers
describe the dicts the views return, for the schema.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers

from scores.validation import MAX_ID
from scores.writes import (
    BULK_MAX,
    DERIVED,
    WRITE_FIELDS,
    WriteInvalid,
    parse_bulk,
    parse_fields,
)


def write_field(name: str, *, required: bool, help_text: str | None = None) -> serializers.Field:
    """The schema of the write field ``name`` as a DRF field (validation is ``parse_fields``')."""
    spec = WRITE_FIELDS[name]
    kind = (spec.schema["type"], spec.schema.get("format"))
    options: dict[str, Any] = {"required": required, "help_text": help_text or spec.help}
    if kind == ("integer", None):
        return serializers.IntegerField(
            min_value=spec.schema["minimum"], max_value=spec.schema["maximum"], **options
        )
    if kind == ("boolean", None):
        return serializers.BooleanField(**options)
    if kind == ("string", "date-time"):
        return serializers.DateTimeField(**options)
    if kind == ("string", "uuid"):
        return serializers.UUIDField(**options)
    if kind == ("string", None):
        return serializers.CharField(
            max_length=spec.schema["maxLength"], allow_blank=True, **options
        )
    if kind == ("number", None):
        return serializers.DecimalField(
            max_digits=9, decimal_places=2, coerce_to_string=False, **options
        )
    raise ValueError(f"no schema mapping for {name}: {spec.schema}")  # pragma: no cover


# --- Examples, shown with each request body and answer in the schema ------------------------
SCORE_EXAMPLE = {
    "id": 17,
    "user_id": 4,
    "exercise_id": 5,
    "correct": True,
    "created_at": "2026-11-26T14:24:20.123456Z",
    "updated_at": "2026-11-26T14:30:02.000001Z",
    "attempts": 2,
    "first_correct_at": "2026-11-26T14:30:01Z",
    "points": None,
    "max_points": None,
}
ATTEMPT_ID_EXAMPLE = "6f1c2b1e-54a9-4a55-a1de-3b1bd0f0c2a7"
ATTEMPT_EXAMPLE = {
    "id": 31,
    "score_id": 17,
    "user_id": 4,
    "exercise_id": 5,
    "correct": True,
    "attempted_at": "2026-11-26T14:30:01Z",
    "recorded_at": "2026-11-26T14:30:02.000001Z",
    "recorded_by": "grader",
    "attempt_id": ATTEMPT_ID_EXAMPLE,
    "applied": True,
    "points": None,
    "max_points": None,
    "reason": None,
}


def request_examples(*examples: tuple[str, dict[str, Any]]) -> Any:
    """``extend_schema_serializer`` with these (name, value) request examples."""
    return extend_schema_serializer(
        examples=[OpenApiExample(name, value=value, request_only=True) for name, value in examples]
    )


def answer_example(value: dict[str, Any]) -> Any:
    """``extend_schema_serializer`` with this example of an answer (200 and 201; a list's
    example is this one item, paginated)."""
    return extend_schema_serializer(
        examples=[OpenApiExample("Example", value=value, response_only=True)]
    )


CORRECT_HELP = (
    "Whether the attempt was right (true/false, or 0/1). Required unless points and max_points "
    "are given; then it defaults to points == max_points."
)


def result_fields() -> dict[str, serializers.Field]:
    """``correct``, ``points`` and ``max_points``, the result of a write."""
    return {
        "correct": write_field("correct", required=False, help_text=CORRECT_HELP),
        "points": write_field("points", required=False),
        "max_points": write_field("max_points", required=False),
    }


class WriteSerializer(serializers.Serializer):
    """A write body: its declared fields, read by ``scores.writes.parse_fields`` (a derived
    field, ``correct``, is declared optional for the schema and required there unless the
    other fields give it)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        required = [name for name, field in self.fields.items() if field.required]
        required += [name for name in DERIVED if name in self.fields]
        try:
            return parse_fields(
                data,
                required=required,
                optional=[name for name, _ in self.fields.items() if name not in required],
            )
        except WriteInvalid as exc:
            raise serializers.ValidationError(exc.errors) from exc


@request_examples(
    ("The old client's upsert", {"exercise_id": 5, "correct": True}),
    (
        "The grader: partial credit, a retry key, when it happened",
        {
            "user_id": 4,
            "exercise_id": 5,
            "points": 7.5,
            "max_points": 10,
            "attempt_id": ATTEMPT_ID_EXAMPLE,
            "attempted_at": "2026-11-26T14:30:01Z",
        },
    ),
)
class ScoreWriteSerializer(WriteSerializer):
    """Body of ``POST /scores`` and ``PATCH /scores``: ``exercise_id`` is required; so is
    ``correct``, unless ``points`` and ``max_points`` are both given (then ``correct`` is
    ``points == max_points``)."""

    exercise_id = write_field("exercise_id", required=True)
    correct, points, max_points = result_fields().values()
    user_id = write_field("user_id", required=False)
    attempted_at = write_field("attempted_at", required=False)
    attempt_id = write_field("attempt_id", required=False)
    reason = write_field("reason", required=False)


@request_examples(
    ("The later client's upsert", {"correct": True}),
    ("Partial credit", {"points": 7.5, "max_points": 10}),
)
class ScoreCorrectSerializer(WriteSerializer):
    """Body of ``PUT /scores/user/{exercise_id}``: ``correct`` is required unless ``points`` and
    ``max_points`` are both given (then ``correct`` is ``points == max_points``)."""

    correct, points, max_points = result_fields().values()
    user_id = write_field(
        "user_id",
        required=False,
        help_text="Whose score (privileged callers only; defaults to the caller).",
    )
    attempted_at = write_field("attempted_at", required=False)
    attempt_id = write_field("attempt_id", required=False)
    reason = write_field("reason", required=False)


@request_examples(("A correction", {"correct": False}))
class ScoreUpdateSerializer(WriteSerializer):
    """Body of ``PUT``/``PATCH /scores/{id}``: only ``correct`` changes; the ids may be repeated
    but not changed. ``correct`` is required unless ``points`` and ``max_points`` are both
    given."""

    correct, points, max_points = result_fields().values()
    user_id = write_field(
        "user_id", required=False, help_text="If given, must be the score's own user_id."
    )
    exercise_id = write_field(
        "exercise_id", required=False, help_text="If given, must be the score's own exercise_id."
    )
    attempted_at = write_field("attempted_at", required=False)
    attempt_id = write_field("attempt_id", required=False)
    reason = write_field("reason", required=False)


class BulkItemSerializer(WriteSerializer):
    user_id = write_field("user_id", required=True, help_text="Whose score.")
    exercise_id = write_field("exercise_id", required=True)
    correct, points, max_points = result_fields().values()
    attempted_at = write_field("attempted_at", required=False)
    attempt_id = write_field("attempt_id", required=False)
    reason = write_field("reason", required=False)


@request_examples(
    (
        "Two scores",
        {
            "scores": [
                {"user_id": 4, "exercise_id": 5, "correct": True},
                {"user_id": 5, "exercise_id": 5, "points": 3, "max_points": 10},
            ]
        },
    )
)
class BulkSerializer(serializers.Serializer):
    """Body of ``POST /scores/bulk``, read by ``scores.writes.parse_bulk``."""

    scores = BulkItemSerializer(
        many=True,
        help_text=f"1 to {BULK_MAX} scores, each (user, exercise) once, each attempt_id once per "
        "user.",
    )

    def run_validation(self, data: Any = serializers.empty) -> dict[str, Any]:
        return self.to_internal_value(None if data is serializers.empty else data)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        try:
            return {"scores": parse_bulk(data)}
        except WriteInvalid as exc:
            raise serializers.ValidationError(exc.errors) from exc


@answer_example(SCORE_EXAMPLE)
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
    points = serializers.DecimalField(
        max_digits=9,
        decimal_places=2,
        coerce_to_string=False,
        read_only=True,
        allow_null=True,
        help_text="Points of the kept attempt (null if it had none).",
    )
    max_points = serializers.DecimalField(
        max_digits=9, decimal_places=2, coerce_to_string=False, read_only=True, allow_null=True
    )


@answer_example(ATTEMPT_EXAMPLE)
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
    applied = serializers.BooleanField(help_text="False: did not apply to the score.")
    points = serializers.DecimalField(
        max_digits=9, decimal_places=2, coerce_to_string=False, allow_null=True
    )
    max_points = serializers.DecimalField(
        max_digits=9, decimal_places=2, coerce_to_string=False, allow_null=True
    )
    reason = serializers.CharField(
        allow_null=True, help_text="Why it was written, as the writer said (null: not said)."
    )


@answer_example(
    {
        "user_id": 4,
        "scores": [SCORE_EXAMPLE],
        "attempts": [
            {
                **ATTEMPT_EXAMPLE,
                "id": 30,
                "correct": False,
                "attempted_at": "2026-11-26T14:24:20.123456Z",
                "recorded_at": "2026-11-26T14:24:20.123456Z",
                "recorded_by": "4",
                "attempt_id": None,
            },
            {**ATTEMPT_EXAMPLE, "reason": "Regraded after the test fix"},
        ],
    }
)
class PrivacyExportSerializer(serializers.Serializer):
    """Everything stored about one user (``GET /privacy/users/{user_id}``)."""

    user_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    scores = ScoreSerializer(many=True, help_text="Their scores, in id order.")
    attempts = AttemptSerializer(
        many=True,
        help_text="Their whole attempt log in id order, also of scores deleted since.",
    )


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Erased",
            value={"user_id": 4, "scores_deleted": 1, "attempts_deleted": 2},
            response_only=True,
        ),
        OpenApiExample(
            "Nothing stored",
            value={"user_id": 4, "scores_deleted": 0, "attempts_deleted": 0},
            response_only=True,
        ),
    ]
)
class ErasureSerializer(serializers.Serializer):
    """What ``DELETE /privacy/users/{user_id}`` erased (zeros: there was nothing)."""

    user_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    scores_deleted = serializers.IntegerField(min_value=0)
    attempts_deleted = serializers.IntegerField(min_value=0)


@answer_example({"created": 1, "updated": 1})
class BulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()


@answer_example(
    {
        "user_id": 4,
        "attempted": 10,
        "correct": 7,
        "incorrect": 3,
        "last_updated_at": "2026-11-26T14:30:02.000001Z",
        "points": 17.5,
        "max_points": 30,
    }
)
class SummarySerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    attempted = serializers.IntegerField(help_text="Exercises with a score.")
    correct = serializers.IntegerField()
    incorrect = serializers.IntegerField()
    last_updated_at = serializers.DateTimeField(allow_null=True)
    points = serializers.DecimalField(
        max_digits=15,
        decimal_places=2,
        coerce_to_string=False,
        help_text="Sum of points over the user's scores that have points (0 if none).",
    )
    max_points = serializers.DecimalField(
        max_digits=15,
        decimal_places=2,
        coerce_to_string=False,
        help_text="Sum of max_points over the same scores (0 if none).",
    )


@answer_example(
    {
        "exercise_id": 5,
        "attempted": 20,
        "correct": 15,
        "success_rate": 0.75,
        "first_try_correct": 9,
        "avg_attempts_to_correct": 1.6,
        "avg_points_ratio": None,
    }
)
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
    avg_points_ratio = serializers.FloatField(
        allow_null=True,
        help_text="Mean of points / max_points over the exercise's scores that have points "
        "(null if none), rounded to 4 places.",
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


@answer_example({"status": "success", "message": "pong!"})
class PingSerializer(serializers.Serializer):
    status = serializers.CharField()
    message = serializers.CharField()


@answer_example({"status": "ok"})
class StatusSerializer(serializers.Serializer):
    status = serializers.CharField()


@extend_schema_field(
    {
        "anyOf": [
            {"$ref": "#/components/schemas/Score"},
            {
                "type": "object",
                "required": ["id", "user_id", "exercise_id"],
                "properties": {
                    "id": {"type": "integer"},
                    "user_id": {"type": "integer"},
                    "exercise_id": {"type": "integer"},
                },
            },
        ]
    }
)
class EventDataField(serializers.JSONField):
    """An event's ``data``: a Score, or the ids of a deleted one."""


# Events are CloudEvents, whose "source" and "data" members a Serializer class cannot declare
# (they are Serializer attributes): their schema is built with drf-spectacular's helper.
EventSerializer = inline_serializer(
    name="Event",
    fields={
        "specversion": serializers.CharField(help_text="1.0"),
        "id": serializers.UUIDField(help_text="Unique per event: consumers deduplicate by it."),
        "source": serializers.CharField(help_text="evalsvc"),
        "type": serializers.ChoiceField(
            choices=["score.created", "score.updated", "score.deleted"]
        ),
        "time": serializers.DateTimeField(help_text="When the change was made."),
        "subject": serializers.CharField(help_text="users/<user_id>/exercises/<exercise_id>"),
        "datacontenttype": serializers.CharField(help_text="application/json"),
        "sequence": serializers.IntegerField(
            help_text="Strictly increasing in commit order across all events."
        ),
        "data": EventDataField(
            help_text="The score as GET /scores/{id} shows it after the change; for "
            "score.deleted only id, user_id and exercise_id."
        ),
    },
)


@answer_example(
    {
        "results": [
            {
                "specversion": "1.0",
                "id": "0b6f3f4e-9f0a-4c55-8d52-0c6e1f1b9a10",
                "source": "evalsvc",
                "type": "score.updated",
                "time": "2026-11-26T14:30:02.000001Z",
                "subject": "users/4/exercises/5",
                "datacontenttype": "application/json",
                "sequence": 42,
                "data": SCORE_EXAMPLE,
            }
        ],
        "next_after": 42,
    }
)
class EventPageSerializer(serializers.Serializer):
    results = serializers.ListField(child=EventSerializer)
    next_after = serializers.IntegerField(
        help_text="The last sequence returned, or the given one when none: pass it as after."
    )
