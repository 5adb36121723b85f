"""Expected shapes, written once for every API test."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scores.models import MAX_ID, Score


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def score_json(score: Score) -> dict[str, Any]:
    """The API's representation of a stored score."""
    score.refresh_from_db()
    return {
        "id": score.id,
        "user_id": score.user_id,
        "exercise_id": score.exercise_id,
        "correct": score.correct,
        "created_at": iso(score.created_at),
        "updated_at": iso(score.updated_at),
        "attempts": score.attempts,
        "first_correct_at": None if score.first_correct_at is None else iso(score.first_correct_at),
        "points": None if score.points is None else float(score.points),
        "max_points": None if score.max_points is None else float(score.max_points),
    }


def stored(**lookup: Any) -> list[tuple[int, int, bool]]:
    """The stored scores as (user_id, exercise_id, correct), ordered."""
    return list(
        Score.objects.filter(**lookup)
        .order_by("user_id", "exercise_id")
        .values_list("user_id", "exercise_id", "correct")
    )


def page(results: list[dict[str, Any]], next: str | None = None) -> dict[str, Any]:
    return {"next": next, "previous": None, "results": results}


# Validation messages, as the API words them, and a field left out of a body.
MISSING = object()
INTEGER = "Must be an integer."
RANGE = f"Must be an integer from 1 to {MAX_ID}."
REQUIRED = "This field is required."
NULL = "This field may not be null."
BOOLEAN = "Must be a boolean (true or false)."
