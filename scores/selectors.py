"""The read path: which scores a caller may see, and how they are fetched (as plain dicts,
rendered straight to JSON)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypedDict, cast

from django.db import connections, models, router
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from scores.callers import Caller
from scores.models import Attempt, ExerciseStats, Score
from scores.permissions import may_see_user
from scores.statements import SCORE_FIELDS
from scores.validation import CENT, MAX_PK


class ScoreRow(TypedDict):
    id: int
    user_id: int
    exercise_id: int
    correct: bool
    created_at: datetime
    updated_at: datetime
    attempts: int
    first_correct_at: datetime | None
    points: Decimal | None
    max_points: Decimal | None


def scores_visible_to(caller: Caller) -> QuerySet[Score, dict[str, Any]]:
    """Every score the caller may read: their own, or anyone's for a privileged caller."""
    rows = Score.objects.order_by().values(*SCORE_FIELDS)
    if caller.privileged:
        return rows
    if caller.user_id is None:
        return rows.none()
    return rows.filter(user_id=caller.user_id)


def scores_of_user(*, caller: Caller, user_id: int) -> QuerySet[Score, dict[str, Any]]:
    """One user's scores as the caller may see them (none of another user's for a
    non-privileged caller)."""
    return scores_visible_to(caller).filter(user_id=user_id)


def _as_datetime(value: Any) -> datetime:
    """A stored timestamp as an aware datetime (SQLite hands a raw cursor text)."""
    parsed = value if isinstance(value, datetime) else parse_datetime(value)
    if parsed is None:
        raise ValueError(f"not a timestamp: {value!r}")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _as_decimal(value: Any) -> Decimal:
    """A stored amount of points as an exact decimal (SQLite hands a raw cursor a float)."""
    return value if isinstance(value, Decimal) else Decimal(repr(value)).quantize(CENT)


def _reader(field: models.Field[Any, Any]) -> Any:
    """How a raw cursor's value of ``field`` becomes the API's, None kept as None."""
    if isinstance(field, models.DateTimeField):
        return _as_datetime
    if isinstance(field, models.DecimalField):
        return _as_decimal
    if isinstance(field, models.BooleanField):
        return bool
    return None


_READERS = [_reader(Score._meta.get_field(name)) for name in SCORE_FIELDS]  # type: ignore[arg-type]


def score_row(values: Sequence[Any]) -> ScoreRow:
    """A score from a raw cursor's row of ``SCORE_FIELDS``."""
    return cast(
        ScoreRow,
        {
            name: value if value is None or read is None else read(value)
            for name, value, read in zip(SCORE_FIELDS, values, _READERS, strict=True)
        },
    )


# One-row lookups are on every hot path (get one, by exercise, update): plain SQL over the
# same columns, no ORM query compilation.
_SELECT = f"SELECT {', '.join(SCORE_FIELDS)} FROM scores WHERE "


def _one(where: str, params: Sequence[Any], *, primary: bool = False) -> ScoreRow | None:
    alias = "default" if primary else router.db_for_read(Score)
    with connections[alias].cursor() as cursor:
        cursor.execute(_SELECT + where, params)
        row = cursor.fetchone()
    return None if row is None else score_row(row)


def score_by_id(score_id: int, *, primary: bool = False) -> ScoreRow | None:
    """One score by id, whoever may see it (``primary``: never from a replica)."""
    if not 0 < score_id <= MAX_PK:
        return None
    return _one("id = %s", [score_id], primary=primary)


def score_visible(*, caller: Caller, score_id: int) -> ScoreRow | None:
    """One score by id if the caller may see it (another user's score is simply absent)."""
    if not 0 < score_id <= MAX_PK:
        return None
    if caller.privileged:
        return _one("id = %s", [score_id])
    if caller.user_id is None:
        return None
    return _one("id = %s AND user_id = %s", [score_id, caller.user_id])


def score_of_user(*, caller: Caller, user_id: int, exercise_id: int) -> ScoreRow | None:
    """The score of one (user, exercise) if the caller may see it, else None."""
    if not may_see_user(caller, user_id):
        return None
    return _one("user_id = %s AND exercise_id = %s", [user_id, exercise_id])


ATTEMPT_FIELDS = (
    "id",
    "score_id",
    "user_id",
    "exercise_id",
    "correct",
    "attempted_at",
    "recorded_at",
    "recorded_by",
    "attempt_id",
    "applied",
    "points",
    "max_points",
    "reason",
)


def attempts_of_score(score_id: int) -> QuerySet[Attempt, dict[str, Any]]:
    """The attempt log of one score (ordering is the paginator's: oldest first)."""
    return Attempt.objects.filter(score_id=score_id).order_by().values(*ATTEMPT_FIELDS)


def attempt_of_user(user_id: int, attempt_id: uuid.UUID) -> dict[str, Any] | None:
    """A user's logged attempt by its client-chosen id, or None."""
    return (
        Attempt.objects.filter(user_id=user_id, attempt_id=attempt_id)
        .values(*ATTEMPT_FIELDS)
        .first()
    )


def user_summary(*, user_id: int) -> dict[str, Any]:
    """Progress of one user: a scan of their rows through the (user_id, exercise_id) index.
    ``points`` and ``max_points`` are summed over their scores that have points (0 if none)."""
    totals = Score.objects.filter(user_id=user_id).aggregate(
        attempted=Count("id"),
        correct=Count("id", filter=Q(correct=True)),
        last=Max("updated_at"),
        points_sum=Sum("points"),
        max_points_sum=Sum("max_points", filter=Q(points__isnull=False)),
    )
    return {
        "user_id": user_id,
        "attempted": totals["attempted"],
        "correct": totals["correct"],
        "incorrect": totals["attempted"] - totals["correct"],
        "last_updated_at": totals["last"],
        "points": _as_decimal(totals["points_sum"] or 0),
        "max_points": _as_decimal(totals["max_points_sum"] or 0),
    }


def exercise_stats() -> QuerySet[ExerciseStats, dict[str, Any]]:
    """Per-exercise counters summed over their shards (never a scan of ``scores`` or of the
    attempt log); exercises with no score left are omitted. Rows carry raw sums: see
    ``with_rates``."""
    return (
        ExerciseStats.objects.order_by()
        .values("exercise_id")
        .annotate(
            attempted=Sum("attempted"),
            correct=Sum("correct"),
            first_try_correct=Sum("first_try_correct"),
            solved=Sum("solved"),
            attempts_to_correct=Sum("attempts_to_correct"),
            scored_sum=Sum("scored"),
            points_ratio=Sum("points_ratio_sum"),
        )
        .filter(attempted__gt=0)
    )


def exercise_stats_totals() -> dict[str, int]:
    """Over every exercise of ``exercise_stats``, from the same counters: ``exercises``,
    ``attempted`` (scores), ``correct`` (correct scores) and ``most_attempted`` (the scores of
    the busiest exercise); all 0 when there is no score."""
    totals = ExerciseStats.objects.aggregate(
        exercises=Count("exercise_id", distinct=True, filter=Q(attempted__gt=0)),
        attempted=Sum("attempted"),
        correct=Sum("correct"),
    )
    busiest = exercise_stats().order_by("-attempted").values_list("attempted", flat=True)[:1]
    return {
        "exercises": totals["exercises"],
        "attempted": totals["attempted"] or 0,
        "correct": totals["correct"] or 0,
        "most_attempted": next(iter(busiest), 0),
    }


def ratio(numerator: int | Decimal, denominator: int) -> float:
    """numerator / denominator rounded to 4 places, halves up (1/32 is 0.0313)."""
    exact = Decimal(numerator) / Decimal(denominator)
    return float(exact.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def with_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API's statistics from ``exercise_stats`` rows: ``success_rate`` = correct /
    attempted, ``avg_attempts_to_correct`` = mean applied attempts up to the first correct
    one, among users who got it right (null if nobody did), and ``avg_points_ratio`` = mean of
    points / max_points over the scores that have points (null if none), all rounded to 4
    places."""
    return [
        {
            "exercise_id": row["exercise_id"],
            "attempted": row["attempted"],
            "correct": row["correct"],
            "success_rate": ratio(row["correct"], row["attempted"]),
            "first_try_correct": row["first_try_correct"],
            "avg_attempts_to_correct": (
                ratio(row["attempts_to_correct"], row["solved"]) if row["solved"] else None
            ),
            "avg_points_ratio": (
                ratio(row["points_ratio"], row["scored_sum"]) if row["scored_sum"] else None
            ),
        }
        for row in rows
    ]


EXPORT_FIELDS = (
    "id",
    "user_id",
    "exercise_id",
    "correct",
    "created_at",
    "updated_at",
    "points",
    "max_points",
)
EXPORT_BATCH = 5000


def scores_for_export(rows: QuerySet[Score, Any]) -> Iterator[tuple[Any, ...]]:
    """Every row of ``rows`` as a tuple of ``EXPORT_FIELDS``, in id order, in constant memory
    (``in_id_order``)."""
    return in_id_order(rows.values_list(*EXPORT_FIELDS), key=lambda row: row[0])


def in_id_order(rows: QuerySet[Any, Any], *, key: Any, batch: int = EXPORT_BATCH) -> Iterator[Any]:
    """The rows of ``rows`` (a ``values`` or ``values_list`` queryset of a table with an ``id``)
    in id order, in constant memory; ``key(row)`` is a row's id.

    A server-side cursor streams them; where those are disabled (PgBouncer in transaction mode:
    ``DISABLE_SERVER_SIDE_CURSORS``) keyset batches by id do.
    """
    ordered = rows.order_by("id")
    if not connections[ordered.db].settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        yield from ordered.iterator(chunk_size=batch)
        return
    last_id = 0
    while page := list(ordered.filter(id__gt=last_id)[:batch]):
        yield from page
        last_id = key(page[-1])
