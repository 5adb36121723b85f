"""Staff inspection of scores, usable on a table of millions of rows: every query of the score
list is served by an index of ``scores`` and reads a bounded number of rows (no full count, no
facet counts, no date hierarchy), and the statistics page reads the trigger-maintained
``exercise_stats`` counters, never ``scores``.

Staff corrections are written through ``scores.services`` like every other write, so they are
logged as attempts (recorded by the staff account's username). Staff give a reason for each
change and deletion of a score: it goes to the attempt log (changes) and to the audit log
(``scores.audit``), with who did it. The audit log is shown read-only; API tokens issued or
revoked here are audited too.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import F, FloatField, Q, QuerySet
from django.db.models.functions import Cast
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from scores import audit
from scores.csv_export import csv_chunks
from scores.models import AuditEntry, Score
from scores.selectors import (
    attempts_of_score,
    exercise_stats,
    exercise_stats_totals,
    scores_for_export,
    with_rates,
)
from scores.services import Write, WriteMode, score_delete, score_write, scores_delete_by_ids
from scores.validation import REASON_MAX, InvalidValue, parse_id_text, parse_reason
from scores.writes import points_rules

ATTEMPTS_SHOWN = 200
DELETE_BATCH = 1000  # scores deleted per statement by "delete selected"
NOT_APPLIED = {"latest": "no (older than the score)", "best": "no (not better than the score)"}
POLICY_NAMES = {
    "latest": "latest (a score is its newest attempt)",
    "best": "best (a score is its best attempt)",
}
COUNT_CAP = 10_000  # the score list counts at most this many rows (plus one)
STATS_PER_PAGE = 100

# The admin index links to the statistics page (templates/admin/scores/site_index.html).
admin.site.index_template = "admin/scores/site_index.html"


class CountAtLeast(int):
    """A count stopped at ``COUNT_CAP + 1`` rows; the admin prints it as "more than 10000"."""

    def __str__(self) -> str:
        return f"more than {COUNT_CAP}"


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP + 1`` rows (``SELECT count(*) FROM (... LIMIT 10001)``): a
    page of the whole table costs a few milliseconds, not a count of millions of rows. Past the
    cap the pages stop at the 10001st row; filters and search narrow the list instead."""

    @cached_property
    def count(self) -> int:
        rows = cast("QuerySet[Score]", self.object_list).order_by()  # any order counts alike
        counted = rows[: COUNT_CAP + 1].count()
        return CountAtLeast(counted) if counted > COUNT_CAP else counted


class ScoreChangeList(ChangeList):
    """A column ordering ends with the admin's default, ``-id`` (or Django's ``-pk``), to be
    total; here that id follows the direction of the column instead, so ``exercise_id`` ascending
    reads the (exercise_id, id) index forwards rather than sorting an exercise's rows by id."""

    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Score]) -> list[Any]:
        ordering: list[Any] = super().get_ordering(request, queryset)
        first = ordering[0] if len(ordering) > 1 else None
        if isinstance(first, str) and not first.startswith("-") and ordering[-1] in ("-id", "-pk"):
            ordering[-1] = "id"
        return ordering


class IdFilter(admin.SimpleListFilter):
    """A sidebar box taking one id (``?<parameter_name>=<id>``): listing every user or exercise
    would not fit, nor be cheap. An id that is not one redirects to the list with ``?e=1``, as
    Django does for any bad filter value."""

    parameter_name: str
    field: str
    template = "admin/scores/id_filter.html"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def queryset(self, request: HttpRequest, queryset: QuerySet[Score]) -> QuerySet[Score]:
        value = self.value()
        if not value:  # absent, or the box submitted empty
            return queryset
        try:
            return queryset.filter(**{self.field: parse_id_text(value)})
        except InvalidValue as exc:
            raise IncorrectLookupParameters(f"{self.parameter_name}: {exc}") from exc

    def choices(self, changelist: ChangeList) -> Any:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "All",
            "value": self.value() or "",
            "hidden": [
                (name, value)
                for name, value in changelist.params.items()
                if name != self.parameter_name
            ],
        }


class UserFilter(IdFilter):
    title = "user id"
    parameter_name = "user"
    field = "user_id"  # the unique (user_id, exercise_id) index


class ExerciseFilter(IdFilter):
    title = "exercise id"
    parameter_name = "exercise"
    field = "exercise_id"  # the (exercise_id, id) index, already in the list's order


SEARCH_PREFIXES = {"user": "user_id", "exercise": "exercise_id"}


REASON_HELP = (
    f"Why (at most {REASON_MAX} characters). Kept in the attempt log, which the learner can "
    "read, and in the audit log with your username."
)


def reason_field(*, required: bool) -> forms.CharField:
    return forms.CharField(
        max_length=REASON_MAX,
        required=required,
        strip=False,  # stored as written, as the API stores it
        help_text=REASON_HELP,
        widget=forms.TextInput(attrs={"size": 80}),
    )


def clean_reason(value: str) -> str | None:
    """A reason as the API reads it (``scores.validation.parse_reason``).

    Raises:
        ValidationError: what the API would refuse.
    """
    try:
        return parse_reason(value)
    except InvalidValue as exc:
        raise forms.ValidationError(str(exc)) from exc


class ReasonForm(forms.Form):
    """The reason asked on the delete confirmations (one score, or the selected ones)."""

    reason = reason_field(required=True)

    def clean_reason(self) -> str | None:
        return clean_reason(self.cleaned_data["reason"])


class ScoreForm(forms.ModelForm):
    """A staff edit: ``points`` and ``max_points`` follow the API's rules (both or neither,
    points no more than max_points), each error under its field; ``reason`` is required to
    change a score (``ScoreAdmin.get_form``)."""

    reason = reason_field(required=False)

    class Meta:
        model = Score
        fields = ["user_id", "exercise_id", "correct", "points", "max_points", "reason"]

    def clean_reason(self) -> str | None:
        return clean_reason(self.cleaned_data["reason"])

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        values = {
            name: cleaned[name]
            for name in ("points", "max_points", "correct")
            if cleaned.get(name) is not None
        }
        errors: dict[str, list[str]] = {}
        points_rules(values, errors, correct_required=False)
        for name, messages_ in errors.items():
            self.add_error(name, messages_)
        return cleaned


@admin.register(Score)
class ScoreAdmin(admin.ModelAdmin):
    form = ScoreForm
    list_display = [
        "id",
        "user_id",
        "exercise_id",
        "correct",
        "points",
        "max_points",
        "created_at",
        "updated_at",
    ]
    list_filter = [
        "correct",
        UserFilter,
        ExerciseFilter,
        ("updated_at", admin.DateFieldListFilter),
    ]
    # Every ordering the list offers follows an index (created_at has none).
    sortable_by = ["id", "user_id", "exercise_id", "updated_at"]
    search_fields = ["user_id", "exercise_id"]  # what get_search_results matches, exactly
    search_help_text = (
        "Ids, exactly: 42 matches user 42 or exercise 42; user:42 or exercise:7 only one of "
        "them; several terms must all match."
    )
    readonly_fields = [
        "created_at",
        "updated_at",
        "attempts",
        "first_correct_at",
        "attempt_history",
    ]
    exclude = ["last_attempted_at", "first_attempt_correct", "attempts_to_correct"]
    show_full_result_count = False  # no COUNT(*) of the whole table on every page
    show_facets = admin.ShowFacets.NEVER  # a facet is a count over the filtered rows
    paginator = CappedCountPaginator
    list_per_page = 50
    ordering = ["-id"]
    actions = ["export_csv", "delete_selected"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ScoreChangeList

    def get_form(
        self, request: HttpRequest, obj: Score | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        form.base_fields["reason"].required = obj is not None  # a change needs a reason
        return form

    def get_readonly_fields(self, request: HttpRequest, obj: Score | None = None) -> Any:
        if obj is None:  # the write service sets the history of a new score
            return ["created_at", "updated_at", "attempts", "first_correct_at"]
        return ["user_id", "exercise_id", *self.readonly_fields]  # a score's identity is fixed

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Score], search_term: str
    ) -> tuple[QuerySet[Score], bool]:
        """Equality on the indexed id columns (Django's own ``=field`` search compares the
        columns as text, which no index serves). A term that is not an id matches nothing."""
        for term in search_term.split():
            prefix, _, text = term.rpartition(":")
            try:
                value = parse_id_text(text)
            except InvalidValue as exc:
                messages.warning(request, f"Search {term!r}: {exc} Nothing matches it.")
                return queryset.none(), False
            if prefix in SEARCH_PREFIXES:
                queryset = queryset.filter(**{SEARCH_PREFIXES[prefix]: value})
            elif not prefix:
                queryset = queryset.filter(Q(user_id=value) | Q(exercise_id=value))
            else:
                messages.warning(
                    request, f"Search {term!r}: say user:<id> or exercise:<id>. Nothing matches it."
                )
                return queryset.none(), False
        return queryset, False

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
                    ("correct" if row["correct"] else "incorrect")
                    + ("" if row["points"] is None else f", {row['points']} / {row['max_points']}"),
                    "yes" if row["applied"] else NOT_APPLIED[settings.SCORE_POLICY],
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

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        """The list, with the grading policy in force (``SCORE_POLICY``) under its title."""
        policy = POLICY_NAMES[settings.SCORE_POLICY]
        return super().changelist_view(request, {**(extra_context or {}), "grading_policy": policy})

    def save_model(self, request: HttpRequest, obj: Score, form: Any, change: bool) -> None:
        """Through the write service (the admin's transaction holds the write and its audit
        entry together)."""
        reason = form.cleaned_data.get("reason")
        result = score_write(
            write=Write(
                user_id=obj.user_id,
                exercise_id=obj.exercise_id,
                correct=obj.correct,
                points=obj.points,
                max_points=obj.max_points,
                reason=reason,
            ),
            recorded_by=request.user.get_username(),
            mode=WriteMode.UPDATE if change else WriteMode.CREATE,
            correction=True,  # staff correct scores: under every policy their edit applies
        )
        for field, value in result.score.items():
            setattr(obj, field, value)
        audit.record(
            audit.account_actor(request.user),
            "score.changed" if change else "score.added",
            audit.score_target(result.score),
            reason,
        )

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        """Django's confirmation, with a reason to give (the template
        ``admin/scores/score/delete_confirmation.html``); without one it is shown again."""
        if request.method == "POST" and not self._reason_given(request):
            return HttpResponseRedirect(request.get_full_path())  # the confirmation again
        return super().delete_view(request, object_id, extra_context)

    @admin.action(permissions=["delete"], description="Delete selected scores")
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[Score]
    ) -> HttpResponse | None:
        """Django's action, with a reason to give on its confirmation (the template
        ``admin/scores/score/delete_selected_confirmation.html``)."""
        if request.POST.get("post") and not self._reason_given(request):
            unconfirmed = request.POST.copy()
            del unconfirmed["post"]  # not confirmed: Django shows the confirmation again
            request.POST = unconfirmed  # type: ignore[assignment]  # the stubs say read-only
        return django_delete_selected(self, request, queryset)

    def _reason_given(self, request: HttpRequest) -> bool:
        form = ReasonForm(request.POST)
        if form.is_valid():
            return True
        for message in form.errors.get("reason", []):
            messages.error(request, f"Reason: {message}")
        return False

    def delete_model(self, request: HttpRequest, obj: Score) -> None:
        score_delete(
            score_id=obj.pk,
            actor=audit.account_actor(request.user),
            reason=self._reason(request),
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Score]) -> None:
        """ "Delete selected scores": through the write service, so that each deletion is an
        event and an audit entry too."""
        ids = list(queryset.values_list("id", flat=True))
        actor, reason = audit.account_actor(request.user), self._reason(request)
        for start in range(0, len(ids), DELETE_BATCH):
            scores_delete_by_ids(ids=ids[start : start + DELETE_BATCH], actor=actor, reason=reason)

    def _reason(self, request: HttpRequest) -> str | None:
        """The confirmed deletion's reason (checked by ``_reason_given``)."""
        form = ReasonForm(request.POST)
        return form.cleaned_data["reason"] if form.is_valid() else None

    @admin.action(description="Export selected scores as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Score]) -> StreamingHttpResponse:
        """The columns of ``GET /scores/export.csv``, streamed (selecting "all" exports every
        score the filters match)."""
        response = StreamingHttpResponse(
            csv_chunks(scores_for_export(queryset)), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = 'attachment; filename="scores.csv"'
        return response

    # --- Statistics page ------------------------------------------------------------------

    STATS_ORDERS = {
        "exercise": ("exercise id", ["exercise_id"]),
        "attempted": ("most attempted", ["-attempted", "exercise_id"]),
        "rate": ("lowest success rate", ["rate", "exercise_id"]),
    }

    def get_urls(self) -> list[URLPattern]:
        statistics = path(
            "statistics/",
            self.admin_site.admin_view(self.statistics_view),
            name="scores_score_statistics",
        )
        return [statistics, *super().get_urls()]

    def statistics_view(self, request: HttpRequest) -> TemplateResponse:
        """Per exercise: users with a score, users whose score is correct, the success rate,
        as bars; with the totals over every exercise. From ``exercise_stats`` (the counters
        kept by triggers), ``STATS_PER_PAGE`` exercises a page."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        order = request.GET.get("o", "exercise")
        if order not in self.STATS_ORDERS:
            order = "exercise"
        rows = exercise_stats().annotate(
            rate=Cast(F("correct"), FloatField()) / Cast(F("attempted"), FloatField())
        )
        page = Paginator(rows.order_by(*self.STATS_ORDERS[order][1]), STATS_PER_PAGE).get_page(
            request.GET.get("p")
        )
        totals = exercise_stats_totals()
        scale = totals["most_attempted"] or 1
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Exercise statistics",
            "policy": POLICY_NAMES[settings.SCORE_POLICY],
            "page": page,
            "order": order,
            "orders": [(key, label) for key, (label, _) in self.STATS_ORDERS.items()],
            "rows": [
                {
                    **row,
                    "percent": f"{row['success_rate'] * 100:.1f}",
                    "points_percent": (
                        None
                        if row["avg_points_ratio"] is None
                        else f"{row['avg_points_ratio'] * 100:.1f}"
                    ),
                    "attempted_width": f"{row['attempted'] / scale * 100:.2f}",
                    "correct_width": f"{row['correct'] / scale * 100:.2f}",
                }
                for row in with_rates(list(page.object_list))
            ],
            "totals": {
                **totals,
                "percent": (
                    f"{totals['correct'] / totals['attempted'] * 100:.1f}"
                    if totals["attempted"]
                    else None
                ),
            },
        }
        return TemplateResponse(request, "admin/scores/score/statistics.html", context)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log, read-only for everyone: entries are appended by the code that acts, and
    the database refuses to change or delete them (``scores.audit``)."""

    list_display = ["at", "actor", "action", "target", "reason"]
    list_filter = ["action"]
    search_fields = ["actor", "target"]
    search_help_text = "Actor or target contains, e.g. staff:alice or user 42."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class AuditedTokenAdmin(TokenAdmin):
    """DRF's token admin, each token issued or revoked here written to the audit log (by the
    account it belongs to, never its key). A token's account is fixed once issued."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["user"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            audit.record(audit.account_actor(request.user), "token.issued", token_target(obj))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        target = token_target(obj)
        super().delete_model(request, obj)
        audit.record(audit.account_actor(request.user), "token.revoked", target)


def token_target(token: Any) -> str:
    """An API token by its account: ``token of account <username>``."""
    return f"token of account {token.user.get_username()}"
