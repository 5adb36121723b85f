"""List filters. A bad value is a 400 naming the parameter, never an empty list."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import QuerySet
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.request import Request

from scores.models import MAX_ID, ExerciseStats, Score


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, skipped when the query string names none of the view's filters:
    building and validating the filter form is a seventh of a list request's time, and with
    nothing to filter it changes nothing."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None or not any(
            name in request.query_params for name in filterset_class.base_filters
        ):
            return queryset
        return super().filter_queryset(request, queryset, view)


class IdFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("validators", [MinValueValidator(1), MaxValueValidator(MAX_ID)])
        super().__init__(*args, **kwargs)


class StrictBooleanFilter(django_filters.TypedChoiceFilter):
    """``true``/``false`` (or ``1``/``0``); anything else is an error, not "no filter"."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("choices", [("true", "true"), ("false", "false"), ("1", "1"), ("0", "0")])
        kwargs.setdefault("coerce", lambda value: value in ("true", "1"))
        super().__init__(*args, **kwargs)


class UTCDateTimeField(IsoDateTimeField):
    """ISO 8601, returned in UTC: PostgreSQL refuses offsets beyond 15:59, and an instant
    outside years 1 to 9999 once in UTC is refused here rather than by the database."""

    default_error_messages = {"out_of_range": "Must be from year 1 to 9999 once converted to UTC."}

    def to_python(self, value: Any) -> datetime | None:
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError as exc:
            raise forms.ValidationError(
                self.error_messages["out_of_range"], code="out_of_range"
            ) from exc


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class ScoreFilter(django_filters.FilterSet):
    user_id = IdFilter(help_text="Only this user's scores (others see only their own anyway).")
    exercise_id = IdFilter(help_text="Only scores of this exercise.")
    correct = StrictBooleanFilter(help_text="`true` or `false`.")
    updated_after = UTCDateTimeFilter(
        field_name="updated_at",
        lookup_expr="gte",
        help_text="ISO 8601; scores updated at or after this instant (UTC if no offset).",
    )
    updated_before = UTCDateTimeFilter(
        field_name="updated_at",
        lookup_expr="lt",
        help_text="ISO 8601; scores updated strictly before this instant (UTC if no offset).",
    )

    class Meta:
        model = Score
        fields = ["user_id", "exercise_id", "correct", "updated_after", "updated_before"]


class ExerciseStatsFilter(django_filters.FilterSet):
    exercise_id = IdFilter(help_text="Only this exercise.")

    class Meta:
        model = ExerciseStats
        fields = ["exercise_id"]
