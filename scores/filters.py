"""List filters (django-filter). A bad value is a 400 naming the parameter, never an empty list;
values are read by the same strict parsers as bodies (``scores.validation``), so a control
character, a non-ASCII digit or a week date is refused here too."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import django_filters
from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from scores.models import ExerciseStats, Score
from scores.validation import (
    MAX_ID,
    TIMESTAMP_OUT_OF_RANGE,
    InvalidValue,
    parse_bool_text,
    parse_timestamp_text,
)

_INTEGER = re.compile(r"-?[0-9]{1,4000}", re.ASCII)


class StrictIntegerField(forms.IntegerField):
    """Django's integer field without its leniency: ASCII digits, no spaces or control
    characters (``int()`` would take them), no fractions."""

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        if not _INTEGER.fullmatch(str(value)):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class IdFilter(django_filters.NumberFilter):
    field_class = StrictIntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("validators", [MinValueValidator(1), MaxValueValidator(MAX_ID)])
        super().__init__(*args, **kwargs)


class StrictBooleanField(forms.TypedChoiceField):
    """``true``/``false``/``1``/``0``; anything else is an error, not "no filter"."""

    def to_python(self, value: Any) -> Any:
        if value in self.empty_values:
            return ""
        try:
            return parse_bool_text(str(value))
        except InvalidValue as exc:
            raise forms.ValidationError(
                self.error_messages["invalid_choice"],
                code="invalid_choice",
                params={"value": value},
            ) from exc

    def validate(self, value: Any) -> None:
        if value == "" and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class UTCDateTimeField(forms.DateTimeField):
    """ISO 8601 read by ``parse_timestamp`` (UTC when it has no offset), returned in UTC."""

    default_error_messages = {"out_of_range": TIMESTAMP_OUT_OF_RANGE}

    def to_python(self, value: Any) -> datetime | None:
        if value in self.empty_values:
            return None
        try:
            return parse_timestamp_text(str(value))
        except InvalidValue as exc:
            code = "out_of_range" if str(exc) == TIMESTAMP_OUT_OF_RANGE else "invalid"
            raise forms.ValidationError(self.error_messages[code], code=code) from exc


class UTCDateTimeFilter(django_filters.DateTimeFilter):
    field_class = UTCDateTimeField


class ScoreFilter(django_filters.FilterSet):
    user_id = IdFilter(help_text="Only this user's scores (others see only their own anyway).")
    exercise_id = IdFilter(help_text="Only scores of this exercise.")
    correct = StrictBooleanFilter(help_text="`true` or `false` (or `1`, `0`).")
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
