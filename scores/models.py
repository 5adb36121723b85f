"""The current score of each (user, exercise).

Users and exercises live in other services, so their ids are plain integers here, not foreign
keys. Integrity is the database's job: NOT NULL columns, one row per (user, exercise), positive
ids. Every write goes through ``scores.services``.
"""

from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from scores.validation import MAX_ID, MAX_POINTS, REASON_MAX

__all__ = [
    "MAX_ID",
    "STATS_SHARDS",
    "Attempt",
    "AuditEntry",
    "ExerciseStats",
    "Score",
    "ScoreEvent",
    "WebhookDelivery",
    "WebhookSubscription",
]

# Points and max_points both null, or 0 <= points <= max_points and 0 < max_points <= 1,000,000.
POINTS_VALID = models.Q(points__isnull=True, max_points__isnull=True) | models.Q(
    points__gte=0,
    max_points__gt=0,
    max_points__lte=MAX_POINTS,
    points__lte=models.F("max_points"),
)


class Score(models.Model):
    id = models.BigAutoField(primary_key=True)
    user_id = models.IntegerField()
    exercise_id = models.IntegerField()
    correct = models.BooleanField()
    # Evaluated per row (callable default, or the database's now() for raw inserts), never at
    # import time.
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())
    # History, kept by the write service in the statement that applies an attempt; the
    # defaults describe a row inserted by hand: one attempt, attempted when inserted.
    attempts = models.IntegerField(default=1, db_default=1, help_text="Applied attempts.")
    last_attempted_at = models.DateTimeField(
        default=timezone.now,
        db_default=Now(),
        help_text="attempted_at of the latest applied attempt: older attempts do not apply.",
    )
    first_correct_at = models.DateTimeField(null=True, blank=True)
    first_attempt_correct = models.BooleanField(default=False, db_default=False)
    attempts_to_correct = models.IntegerField(
        null=True, blank=True, help_text="Applied attempts up to the first correct one."
    )
    # Partial credit of the kept attempt (both null when it had none).
    points = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    max_points = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)

    class Meta:
        db_table = "scores"
        ordering = ["id"]
        constraints = [
            # One current score per (user, exercise): the upsert's ON CONFLICT target. Its index
            # also serves every lookup by user_id (leading column).
            models.UniqueConstraint(
                fields=["user_id", "exercise_id"], name="scores_user_exercise_uniq"
            ),
            models.CheckConstraint(
                condition=models.Q(user_id__gt=0), name="scores_user_id_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(exercise_id__gt=0), name="scores_exercise_id_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(attempts__gt=0), name="scores_attempts_positive"
            ),
            models.CheckConstraint(condition=POINTS_VALID, name="scores_points_valid"),
        ]
        indexes = [
            # ?exercise_id= lists (and the admin's search): the rows of one exercise already in
            # id order, so a cursor page reads page_size index entries, not the exercise's rows.
            models.Index(fields=["exercise_id", "id"], name="scores_exercise_id_id_idx"),
            # ?updated_after= / ?updated_before= and the admin's date filter and hierarchy.
            models.Index(fields=["updated_at"], name="scores_updated_at_idx"),
        ]

    def __str__(self) -> str:
        verdict = "correct" if self.correct else "incorrect"
        return f"user {self.user_id} / exercise {self.exercise_id}: {verdict}"


STATS_SHARDS = 16


class ExerciseStats(models.Model):
    """Per-exercise counters, maintained by database triggers on ``scores`` in the statement that
    changes a score (``scores.triggers``), so reading the statistics never scans ``scores``.

    Each exercise's counters are split over ``STATS_SHARDS`` rows (``shard = user_id % 16``):
    concurrent writers of different users rarely touch the same row, so the counters do not
    serialize writes to a popular exercise. Read them summed per exercise.
    """

    pk = models.CompositePrimaryKey("exercise_id", "shard")
    exercise_id = models.IntegerField()
    shard = models.SmallIntegerField()
    attempted = models.BigIntegerField(default=0)  # users with a score
    correct = models.BigIntegerField(default=0)  # users whose score is correct
    first_try_correct = models.BigIntegerField(default=0)  # users whose first attempt was
    solved = models.BigIntegerField(default=0)  # users with a correct attempt so far
    attempts_to_correct = models.BigIntegerField(default=0)  # their attempts up to it, summed
    scored = models.BigIntegerField(default=0)  # users whose score has points
    points_ratio_sum = models.DecimalField(  # their points / max_points, summed
        max_digits=38, decimal_places=20, default=0
    )

    class Meta:
        db_table = "exercise_stats"
        verbose_name_plural = "exercise stats"

    def __str__(self) -> str:
        return f"exercise {self.exercise_id} shard {self.shard}: {self.correct}/{self.attempted}"


class Attempt(models.Model):
    """One write of a score, as it arrived: the append-only log behind ``Score``.

    Written by the write service in the transaction that changes the score; never updated.
    ``score_id`` is not a foreign key: the log outlives a deleted score (until its user is
    erased: ``scores.privacy``), and a bulk reload of ``scores`` (TRUNCATE) does not have to
    cascade into history.
    """

    id = models.BigAutoField(primary_key=True)
    score_id = models.BigIntegerField()
    user_id = models.IntegerField()
    exercise_id = models.IntegerField()
    correct = models.BooleanField()
    attempted_at = models.DateTimeField()
    recorded_at = models.DateTimeField()
    recorded_by = models.CharField(max_length=150)
    attempt_id = models.UUIDField(null=True, blank=True)
    applied = models.BooleanField()
    created_score = models.BooleanField(help_text="This attempt created the score.")
    points = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    max_points = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    # Why it was written, as the writer said (null: no reason given). Nullable without a
    # default, so that adding it to a log of millions of rows changed only the catalog.
    reason = models.CharField(max_length=REASON_MAX, null=True, blank=True)  # noqa: DJ001

    class Meta:
        db_table = "score_attempts"
        constraints = [
            # A client-chosen attempt id names one attempt of one user (two users may pick the
            # same one); the replay lookup reads this index.
            models.UniqueConstraint(
                fields=["user_id", "attempt_id"],
                condition=models.Q(attempt_id__isnull=False),
                name="attempts_user_attempt_id_uniq",
            ),
            models.CheckConstraint(condition=POINTS_VALID, name="attempts_points_valid"),
        ]
        indexes = [
            # A score's attempts, oldest first (the attempts endpoints and the admin inline).
            models.Index(fields=["score_id", "attempted_at", "id"], name="attempts_score_idx"),
            # One user's whole log, in log order: their data export and their erasure.
            models.Index(fields=["user_id", "id"], name="attempts_user_idx"),
        ]

    def __str__(self) -> str:
        verdict = "correct" if self.correct else "incorrect"
        return f"attempt {self.id} on score {self.score_id}: {verdict}"


class ScoreEvent(models.Model):
    """The outbox: one row per applied change of a score, appended in the statement (or the
    transaction) that makes the change, so that the two commit together or not at all.

    ``sequence`` is given later, in commit order, by ``scores.events.sequence_events`` (an
    event's id is taken when it is inserted, which is not the order its transaction commits).
    The score columns hold the score as ``GET /scores/{id}`` showed it after the change; a
    deleted score's event has only its ids.
    """

    TYPES = ("score.created", "score.updated", "score.deleted")

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, help_text="The CloudEvents id.")
    sequence = models.BigIntegerField(null=True, blank=True, unique=True)
    type = models.CharField(max_length=16, choices=[(t, t) for t in TYPES])
    time = models.DateTimeField()
    score_id = models.BigIntegerField()
    user_id = models.IntegerField()
    exercise_id = models.IntegerField()
    correct = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(null=True, blank=True)
    first_correct_at = models.DateTimeField(null=True, blank=True)
    points = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    max_points = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)

    class Meta:
        db_table = "score_events"
        indexes = [
            # The events still to be numbered (few: the sequencer numbers them every moment).
            models.Index(
                fields=["id"], condition=models.Q(sequence__isnull=True), name="events_unsequenced"
            ),
            models.Index(fields=["time"], name="events_time_idx"),  # retention
            # An erasure removes the erased user's earlier events (scores.privacy).
            models.Index(fields=["user_id"], name="events_user_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} of score {self.score_id} (#{self.sequence})"


class AuditEntry(models.Model):
    """Who did what beyond ordinary score writes (``scores.audit``): deletions, erasures, API
    tokens issued or revoked, staff edits in the admin, webhook subscription changes.

    Append-only, and the database enforces it: on PostgreSQL a trigger refuses every UPDATE
    and every DELETE, except a DELETE in a transaction of the retention command
    (``manage.py purge_audit``); on SQLite, triggers refuse both. No score values, tokens or
    secrets are written here: ``target`` names things by their ids.
    """

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(default=timezone.now, db_default=Now())
    actor = models.CharField(max_length=200, help_text="Who: user:<id>, staff:<username>, ...")
    action = models.CharField(max_length=32, help_text="What, e.g. score.deleted, user.erased.")
    target = models.CharField(max_length=200, help_text="What it was done to, by ids.")
    reason = models.CharField(max_length=REASON_MAX, blank=True, default="")

    class Meta:
        db_table = "audit_entries"
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["at"], name="audit_at_idx")]  # retention

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"


class WebhookSubscription(models.Model):
    """A subscriber's URL that the delivery worker POSTs score events to (``scores.webhooks``,
    ``scores.delivery``), signed with its ``secret``.

    ``cursor`` is the sequence of the last event the worker has turned into deliveries for this
    subscription: a new subscription starts at the newest event numbered when it is created,
    and one that is not ``active`` keeps its place until it is active again.
    """

    id = models.BigAutoField(primary_key=True)
    url = models.CharField(max_length=2000, help_text="http or https; checked when saved.")
    event_types = models.JSONField(
        default=list, blank=True, help_text="Event types to deliver; empty: all of them."
    )
    active = models.BooleanField(default=True)
    secret = models.CharField(max_length=100, help_text="whsec_ and the base64 signing key.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    cursor = models.BigIntegerField(
        default=0, help_text="Sequence of the last event turned into deliveries."
    )
    retry_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="It did not answer: nothing is sent to it before this (its failed "
        "delivery's next attempt).",
    )

    class Meta:
        db_table = "webhook_subscriptions"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"webhook {self.id}: {self.url}"


class WebhookDelivery(models.Model):
    """One event to send to one subscription, and how sending it went.

    ``sequence``, ``user_id`` and ``exercise_id`` repeat the event's, so that the worker can
    keep each (subscription, user, exercise)'s events in order from this table's own index.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.BigAutoField(primary_key=True)
    subscription = models.ForeignKey(  # indexed by webhook_deliveries_once, its first column
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    # DO_NOTHING: the retention purge deletes an event's deliveries itself, in one statement
    # (a cascade would make Django load every purged event); the constraint stays.
    event = models.ForeignKey(ScoreEvent, on_delete=models.DO_NOTHING, related_name="deliveries")
    sequence = models.BigIntegerField()
    user_id = models.IntegerField()
    exercise_id = models.IntegerField()
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.PENDING)
    attempts = models.IntegerField(default=0, help_text="Attempts made so far.")
    next_attempt_at = models.DateTimeField(help_text="When a pending delivery is due.")
    last_status = models.IntegerField(
        null=True, blank=True, help_text="HTTP status of the last attempt, if it got one."
    )
    last_error = models.TextField(blank=True, help_text="Why the last attempt failed.")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "webhook_deliveries"
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # One delivery of an event to a subscription: the worker's fan-out may repeat.
            models.UniqueConstraint(
                fields=["subscription", "event"], name="webhook_deliveries_once"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["pending", "delivered", "failed"]),
                name="webhook_deliveries_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(attempts__gte=0), name="webhook_deliveries_attempts_valid"
            ),
        ]
        indexes = [
            # The worker's claim: a subscription's pending deliveries, soonest due first.
            models.Index(
                fields=["subscription", "next_attempt_at", "sequence"],
                condition=models.Q(status="pending"),
                name="webhook_deliveries_due",
            ),
            # An earlier pending event of the same subscription, user and exercise holds a
            # later one back.
            models.Index(
                fields=["subscription", "user_id", "exercise_id", "sequence"],
                condition=models.Q(status="pending"),
                name="webhook_deliveries_order",
            ),
            # The oldest pending event (the backlog metric).
            models.Index(
                fields=["sequence"],
                condition=models.Q(status="pending"),
                name="webhook_deliveries_backlog",
            ),
            # The admin's list, by status, newest first.
            models.Index(fields=["status", "id"], name="webhook_deliveries_status"),
        ]

    def __str__(self) -> str:
        return f"delivery of event #{self.sequence} to webhook {self.subscription_id}"
