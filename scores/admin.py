"""Staff inspection of scores, usable on a table of millions of rows.

Staff corrections are written through ``scores.services`` like every other write, so they are
logged as attempts (recorded by the staff account's username).
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from scores.models import Score
from scores.selectors import attempts_of_score
from scores.services import Write, WriteMode, score_write

ATTEMPTS_SHOWN = 200


@admin.register(Score)
class ScoreAdmin(admin.ModelAdmin):
    list_display = ["id", "user_id", "exercise_id", "correct", "created_at", "updated_at"]
    list_filter = ["correct", "created_at", "updated_at"]
    search_fields = ["=user_id", "=exercise_id"]
    readonly_fields = [
        "created_at",
        "updated_at",
        "attempts",
        "first_correct_at",
        "attempt_history",
    ]
    exclude = ["last_attempted_at", "first_attempt_correct", "attempts_to_correct"]
    show_full_result_count = False  # no COUNT(*) of the whole table on every page
    list_per_page = 50
    ordering = ["-id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Score | None = None) -> Any:
        if obj is None:
            return ["created_at", "updated_at"]
        return ["user_id", "exercise_id", *self.readonly_fields]  # a score's identity is fixed

    @admin.display(description="Attempt log (oldest first)")
    def attempt_history(self, obj: Score) -> SafeString:
        rows = list(attempts_of_score(obj.id).order_by("attempted_at", "id")[:ATTEMPTS_SHOWN])
        if not rows:
            return format_html("<p>{}</p>", "No attempts logged.")
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    row["attempted_at"],
                    "correct" if row["correct"] else "incorrect",
                    "yes" if row["applied"] else "no (older than the score)",
                    row["recorded_by"],
                    row["recorded_at"],
                    row["attempt_id"] or "",
                )
                for row in rows
            ),
        )
        return format_html(
            "<table><thead><tr><th>attempted at</th><th>result</th><th>applied</th>"
            "<th>recorded by</th><th>recorded at</th><th>attempt id</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            body,
        )

    def save_model(self, request: HttpRequest, obj: Score, form: Any, change: bool) -> None:
        result = score_write(
            write=Write(user_id=obj.user_id, exercise_id=obj.exercise_id, correct=obj.correct),
            recorded_by=request.user.get_username(),
            mode=WriteMode.UPDATE if change else WriteMode.CREATE,
        )
        for field, value in result.score.items():
            setattr(obj, field, value)
