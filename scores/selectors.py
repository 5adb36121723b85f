"""The read path: which scores a caller may see, and how they are fetched (as plain dicts,
rendered straight to JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from django.db.models import QuerySet

from scores.authentication import Caller
from scores.models import Score

SCORE_FIELDS = ("id", "user_id", "exercise_id", "correct", "created_at", "updated_at")
MAX_PK = 2**63 - 1


class ScoreRow(TypedDict):
    id: int
    user_id: int
    exercise_id: int
    correct: bool
    created_at: datetime
    updated_at: datetime


def scores_visible_to(caller: Caller) -> QuerySet[Score, dict]:
    """Every score the caller may read: their own, or anyone's for a privileged caller."""
    rows = Score.objects.order_by().values(*SCORE_FIELDS)
    if caller.privileged:
        return rows
    if caller.user_id is None:
        return rows.none()
    return rows.filter(user_id=caller.user_id)


def score_for_caller(*, caller: Caller, score_id: int) -> ScoreRow | None:
    """One score by id if the caller may see it (another user's score is simply absent)."""
    if not 0 < score_id <= MAX_PK:
        return None
    return scores_visible_to(caller).filter(id=score_id).first()  # type: ignore[return-value]


def score_of_user(*, user_id: int, exercise_id: int) -> ScoreRow | None:
    """The score of one (user, exercise), or None."""
    rows = Score.objects.order_by().values(*SCORE_FIELDS)
    return rows.filter(user_id=user_id, exercise_id=exercise_id).first()
