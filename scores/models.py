"""The current score of each (user, exercise).

Users and exercises live in other services, so their ids are plain integers here, not foreign
keys. Integrity is the database's job: NOT NULL columns, one row per (user, exercise), positive
ids. Every write goes through ``scores.services``.
"""

from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

MAX_ID = 2_147_483_647  # PostgreSQL ``integer``


class Score(models.Model):
    id = models.BigAutoField(primary_key=True)
    user_id = models.IntegerField()
    exercise_id = models.IntegerField()
    correct = models.BooleanField()
    # Evaluated per row (callable default, or the database's now() for raw inserts), never at
    # import time.
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

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
        ]
        indexes = [
            # Lists and admin filtered by exercise (exercise_id is not a leading column above).
            models.Index(fields=["exercise_id"], name="scores_exercise_id_idx"),
        ]

    def __str__(self) -> str:
        verdict = "correct" if self.correct else "incorrect"
        return f"user {self.user_id} / exercise {self.exercise_id}: {verdict}"
