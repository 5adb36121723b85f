"""Staff's view of webhooks: subscriptions (written through ``scores.webhooks``, like
``/webhooks``; the secret shown once, when one is created) and their deliveries (read-only, by
status, with each one's last error; failed ones can be sent again)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from scores.admin import CappedCountPaginator, IdFilter
from scores.audit import account_actor
from scores.models import WebhookDelivery, WebhookSubscription
from scores.validation import InvalidValue
from scores.webhooks import (
    EVENT_TYPES,
    check_webhook_url,
    deliveries_send_again,
    subscription_create,
    subscription_delete,
    subscription_update,
)

ERROR_SHOWN = 120  # characters of the last error in the delivery list


def masked(secret: str) -> str:
    """A secret as the admin shows it after its creation: its last four characters only."""
    return f"whsec_…{secret[-4:]}" if secret else ""


class WebhookSubscriptionForm(forms.ModelForm):
    """The URL checked as ``/webhooks`` checks it; the event types as boxes to tick."""

    event_types = forms.MultipleChoiceField(
        choices=[(name, name) for name in EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every type.",
    )

    class Meta:
        model = WebhookSubscription
        fields = ["url", "event_types", "active"]

    def clean_url(self) -> str:
        try:
            return check_webhook_url(self.cleaned_data["url"])
        except InvalidValue as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ["id", "url", "types", "active", "created_at", "secret_masked"]
    list_filter = ["active"]
    readonly_fields = ["secret_masked", "created_at", "cursor"]
    ordering = ["id"]

    @admin.display(description="event types")
    def types(self, obj: WebhookSubscription) -> str:
        return ", ".join(obj.event_types) or "all"

    @admin.display(description="secret")
    def secret_masked(self, obj: WebhookSubscription) -> str:
        return masked(obj.secret)

    def save_model(
        self, request: HttpRequest, obj: WebhookSubscription, form: Any, change: bool
    ) -> None:
        values = {name: form.cleaned_data[name] for name in ("url", "event_types", "active")}
        if change:
            subscription_update(actor=account_actor(request.user), subscription=obj, changes=values)
            return
        created = subscription_create(actor=account_actor(request.user), **values)
        for field in ("id", "secret", "created_at", "cursor"):
            setattr(obj, field, getattr(created, field))
        messages.warning(
            request,
            f"The signing secret of webhook {created.id} is {created.secret} — copy it to the "
            "subscriber now: it is not shown again.",
        )

    def delete_model(self, request: HttpRequest, obj: WebhookSubscription) -> None:
        subscription_delete(actor=account_actor(request.user), subscription=obj)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]
    ) -> None:
        for subscription in queryset:
            subscription_delete(actor=account_actor(request.user), subscription=subscription)


class SubscriptionFilter(IdFilter):
    title = "webhook id"
    parameter_name = "webhook"
    field = "subscription_id"


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Deliveries, newest first; a table as long as the events kept times the subscriptions,
    so the list counts at most ``COUNT_CAP`` rows and filters by indexed columns."""

    list_display = [
        "id",
        "subscription_id",
        "sequence",
        "event_type",
        "subject",
        "status",
        "attempts",
        "last_status",
        "error",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status", SubscriptionFilter]
    list_select_related = ["event"]
    readonly_fields = [
        "subscription",
        "event",
        "sequence",
        "user_id",
        "exercise_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status",
        "last_error",
        "delivered_at",
        "created_at",
    ]
    sortable_by = ()  # newest first only: other orders of a long table have no index
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    list_per_page = 50
    ordering = ["-id"]
    actions = ["send_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the worker makes deliveries

    @admin.display(description="type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.display(description="subject")
    def subject(self, obj: WebhookDelivery) -> str:
        return f"users/{obj.user_id}/exercises/{obj.exercise_id}"

    @admin.display(description="last error")
    def error(self, obj: WebhookDelivery) -> str:
        text = obj.last_error
        return text if len(text) <= ERROR_SHOWN else text[: ERROR_SHOWN - 1] + "…"

    @admin.action(description="Send the selected failed deliveries again", permissions=["change"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        failed = queryset.filter(status=WebhookDelivery.Status.FAILED)
        count = deliveries_send_again(ids=list(failed.values_list("id", flat=True)))
        messages.success(
            request,
            f"{count} failed deliveries will be sent again now (the others selected are left "
            "as they were).",
        )
