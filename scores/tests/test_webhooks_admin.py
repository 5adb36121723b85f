"""The admin's webhook pages: subscriptions written through the same service as /webhooks (the
URL checked, the secret shown once and masked after), deliveries by status with their last
error, failed ones sent again."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from scores.delivery import fan_out
from scores.events import sequence_events
from scores.models import WebhookDelivery, WebhookSubscription
from scores.services import Write, score_write
from scores.webhooks import new_secret

pytestmark = pytest.mark.django_db

RECEIVER = "http://127.0.0.1:9/hook"


@pytest.fixture
def staffer(client: Any, django_user_model: Any) -> Any:
    client.force_login(
        django_user_model.objects.create_user("staffer", is_staff=True, is_superuser=True)
    )
    return client


@pytest.fixture(autouse=True)
def _private_allowed(settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True


def shown_messages(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_adding_a_subscription_shows_its_secret_once(staffer) -> None:
    response = staffer.post(
        "/admin/scores/webhooksubscription/add/",
        {"url": RECEIVER, "event_types": ["score.deleted"], "active": "on"},
        follow=True,
    )

    subscription = WebhookSubscription.objects.get()
    assert (subscription.url, subscription.event_types, subscription.active) == (
        RECEIVER,
        ["score.deleted"],
        True,
    )
    assert subscription.secret.startswith("whsec_")
    assert any(subscription.secret in message for message in shown_messages(response))
    page = staffer.get(f"/admin/scores/webhooksubscription/{subscription.id}/change/")
    listing = staffer.get("/admin/scores/webhooksubscription/")
    for later in (page, listing):
        text = later.content.decode()
        assert subscription.secret not in text
        assert f"whsec_…{subscription.secret[-4:]}" in text


def test_a_refused_url_is_an_error_on_the_form(staffer, settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False

    response = staffer.post("/admin/scores/webhooksubscription/add/", {"url": RECEIVER})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "url": ["Must not reach 127.0.0.1: a loopback address (WEBHOOK_ALLOW_PRIVATE is off)."]
    }
    assert not WebhookSubscription.objects.exists()


def test_changing_and_deleting_a_subscription(staffer) -> None:
    subscription = WebhookSubscription.objects.create(url=RECEIVER, secret=new_secret())

    staffer.post(
        f"/admin/scores/webhooksubscription/{subscription.id}/change/",
        {"url": "http://127.0.0.1:9/other", "event_types": []},
    )
    changed = WebhookSubscription.objects.get()
    staffer.post(f"/admin/scores/webhooksubscription/{subscription.id}/delete/", {"post": "yes"})

    assert (changed.url, changed.event_types, changed.active, changed.secret) == (
        "http://127.0.0.1:9/other",
        [],
        False,
        subscription.secret,
    )
    assert not WebhookSubscription.objects.exists()


@pytest.fixture
def delivery_rows() -> list[WebhookDelivery]:
    """Three deliveries: one delivered, one pending, one failed with its last error."""
    WebhookSubscription.objects.create(url=RECEIVER, secret=new_secret())
    for exercise_id in (1, 2, 3):
        score_write(write=Write(user_id=4, exercise_id=exercise_id, correct=True), recorded_by="g")
    sequence_events()
    fan_out()
    rows = list(WebhookDelivery.objects.order_by("sequence"))
    WebhookDelivery.objects.filter(id=rows[0].id).update(
        status="delivered", attempts=1, last_status=200, delivered_at=timezone.now()
    )
    WebhookDelivery.objects.filter(id=rows[2].id).update(
        status="failed", attempts=7, last_status=503, last_error="Answered 503: try later"
    )
    return rows


def test_the_delivery_list_filters_by_status_and_shows_the_last_error(
    staffer, delivery_rows
) -> None:
    failed = staffer.get("/admin/scores/webhookdelivery/?status__exact=failed")
    everything = staffer.get("/admin/scores/webhookdelivery/")

    assert [row.id for row in failed.context["cl"].result_list] == [delivery_rows[2].id]
    assert "Answered 503: try later" in failed.content.decode()
    assert [row.id for row in everything.context["cl"].result_list] == [
        row.id for row in reversed(delivery_rows)
    ]
    assert "users/4/exercises/3" in failed.content.decode()


def test_sending_failed_deliveries_again_makes_them_due_now(staffer, delivery_rows) -> None:
    before = timezone.now()

    response = staffer.post(
        "/admin/scores/webhookdelivery/",
        {"action": "send_again", "_selected_action": [row.id for row in delivery_rows]},
        follow=True,
    )

    states = {
        row["id"]: (row["status"], row["attempts"], row["last_error"])
        for row in WebhookDelivery.objects.values("id", "status", "attempts", "last_error")
    }
    assert states == {
        delivery_rows[0].id: ("delivered", 1, ""),
        delivery_rows[1].id: ("pending", 0, ""),
        delivery_rows[2].id: ("pending", 0, "Answered 503: try later"),
    }
    assert WebhookDelivery.objects.get(id=delivery_rows[2].id).next_attempt_at >= before
    assert shown_messages(response) == [
        "1 failed deliveries will be sent again now (the others selected are left as they were)."
    ]


def test_deliveries_cannot_be_added_by_hand(staffer) -> None:
    assert staffer.get("/admin/scores/webhookdelivery/add/").status_code == 403
