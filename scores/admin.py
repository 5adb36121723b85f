"""Staff inspection of scores, usable on a table of millions of rows.

Staff corrections are written through ``scores.services`` like every other write.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from scores.models import Score
from scores.services import WriteMode, score_write


@admin.register(Score)
class ScoreAdmin(admin.ModelAdmin):
    list_display = ["id", "user_id", "exercise_id", "correct", "created_at", "updated_at"]
    list_filter = ["correct", "created_at", "updated_at"]
    search_fields = ["=user_id", "=exercise_id"]
    readonly_fields = ["created_at", "updated_at"]
    show_full_result_count = False  # no COUNT(*) of the whole table on every page
    list_per_page = 50
    ordering = ["-id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Score | None = None) -> Any:
        if obj is None:
            return self.readonly_fields
        return ["user_id", "exercise_id", *self.readonly_fields]  # a score's identity is fixed

    def save_model(self, request: HttpRequest, obj: Score, form: Any, change: bool) -> None:
        result = score_write(
            user_id=obj.user_id,
            exercise_id=obj.exercise_id,
            correct=obj.correct,
            mode=WriteMode.UPDATE if change else WriteMode.CREATE,
        )
        for field, value in result.score.items():
            setattr(obj, field, value)
