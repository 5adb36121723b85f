"""``/webhooks`` (spec: "Score events"): privileged callers manage subscriptions; a URL must be
http(s) and reach only public addresses unless WEBHOOK_ALLOW_PRIVATE; the secret is shown once."""

from __future__ import annotations

import base64
import io
from datetime import datetime
from typing import Any

import pytest
from standardwebhooks import Webhook

from scores.models import ScoreEvent, WebhookDelivery, WebhookSubscription
from scores.services import Write, score_write
from scores.validation import InvalidValue
from scores.webhooks import address_refusal, check_webhook_url, new_secret

pytestmark = pytest.mark.django_db

RECEIVER = "http://127.0.0.1:9/hook"  # the discard port: nothing is sent by these tests


@pytest.fixture(autouse=True)
def _private_allowed(settings) -> None:
    """Loopback receivers are allowed here unless a test says otherwise."""
    settings.WEBHOOK_ALLOW_PRIVATE = True


def stored(subscription_id: int) -> dict[str, Any]:
    return WebhookSubscription.objects.filter(id=subscription_id).values().get()


def shown(subscription: WebhookSubscription) -> dict[str, Any]:
    """What the API shows of a subscription."""
    return {
        "id": subscription.id,
        "url": subscription.url,
        "event_types": subscription.event_types,
        "active": subscription.active,
        "created_at": subscription.created_at.isoformat().replace("+00:00", "Z"),
    }


# --- Create ----------------------------------------------------------------------------------


def test_a_post_creates_a_subscription_and_shows_its_generated_secret_once(admin) -> None:
    response = admin.post("/webhooks", {"url": RECEIVER}, format="json")

    assert response.status_code == 201
    body = response.json()
    subscription = WebhookSubscription.objects.get()
    assert body == {**shown(subscription), "secret": subscription.secret}
    assert body["event_types"] == []
    assert body["active"] is True
    assert subscription.secret.startswith("whsec_")
    assert len(base64.b64decode(subscription.secret.removeprefix("whsec_"))) == 32
    Webhook(subscription.secret)  # the library takes it
    assert "secret" not in admin.get(f"/webhooks/{subscription.id}").json()
    assert "secret" not in admin.get("/webhooks").json()["results"][0]


def test_a_post_keeps_the_secret_and_the_fields_given(staff) -> None:
    secret = new_secret()
    body = {
        "url": RECEIVER,
        "event_types": ["score.deleted", "score.created"],
        "active": False,
        "secret": secret,
    }

    response = staff.post("/webhooks", body, format="json")

    assert response.status_code == 201
    assert response.json() == {
        **shown(WebhookSubscription.objects.get()),
        "event_types": ["score.deleted", "score.created"],
        "active": False,
        "secret": secret,
    }
    assert WebhookSubscription.objects.get().secret == secret


def test_a_new_subscription_starts_after_the_events_numbered_before_it(admin) -> None:
    from scores.events import sequence_events

    for exercise_id in (1, 2):
        score_write(write=Write(user_id=1, exercise_id=exercise_id, correct=True), recorded_by="g")
    sequence_events()
    newest = max(ScoreEvent.objects.values_list("sequence", flat=True))

    created = admin.post("/webhooks", {"url": RECEIVER}, format="json").json()

    assert stored(created["id"])["cursor"] == newest


# --- Read, change, delete -----------------------------------------------------------------


@pytest.fixture
def subscription() -> WebhookSubscription:
    return WebhookSubscription.objects.create(url=RECEIVER, secret=new_secret())


def test_the_list_pages_the_subscriptions_by_id(admin) -> None:
    subscriptions = [
        WebhookSubscription.objects.create(url=f"{RECEIVER}/{n}", secret=new_secret())
        for n in range(3)
    ]

    first = admin.get("/webhooks?page_size=2").json()
    second = admin.get(first["next"]).json()

    assert first["results"] == [shown(s) for s in subscriptions[:2]]
    assert second["results"] == [shown(subscriptions[2])]
    assert second["next"] is None


def test_a_get_shows_one_subscription(admin, subscription) -> None:
    response = admin.get(f"/webhooks/{subscription.id}/")

    assert response.status_code == 200
    assert response.json() == shown(subscription)


@pytest.mark.parametrize("path", ["/webhooks/99999", "/webhooks/99999999999999999999"])
def test_an_unknown_subscription_is_a_404(admin, path) -> None:
    response = admin.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "No such webhook subscription."}


def test_a_patch_changes_what_it_names_and_nothing_else(admin, subscription) -> None:
    before = stored(subscription.id)
    changes = {"url": "http://127.0.0.1:9/other", "event_types": ["score.updated"]}

    response = admin.patch(f"/webhooks/{subscription.id}", changes, format="json")

    assert response.status_code == 200
    subscription.refresh_from_db()
    assert response.json() == shown(subscription)
    assert stored(subscription.id) == {**before, **changes}


def test_a_patch_pauses_and_resumes(admin, subscription) -> None:
    paused = admin.patch(f"/webhooks/{subscription.id}", {"active": False}, format="json")
    resumed = admin.patch(f"/webhooks/{subscription.id}", {"active": True}, format="json")

    assert (paused.json()["active"], resumed.json()["active"]) == (False, True)


def test_a_patch_cannot_change_the_secret(admin, subscription) -> None:
    response = admin.patch(f"/webhooks/{subscription.id}", {"secret": new_secret()}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "secret": ["Cannot be changed: create a new subscription for a new secret."]
    }
    assert stored(subscription.id)["secret"] == subscription.secret


def test_a_delete_removes_the_subscription_and_its_deliveries(admin, subscription) -> None:
    score_write(write=Write(user_id=1, exercise_id=1, correct=True), recorded_by="g")
    from scores.delivery import fan_out
    from scores.events import sequence_events

    sequence_events()
    fan_out()
    assert WebhookDelivery.objects.count() == 1

    response = admin.delete(f"/webhooks/{subscription.id}")

    assert response.status_code == 204
    assert not WebhookSubscription.objects.exists()
    assert not WebhookDelivery.objects.exists()
    assert ScoreEvent.objects.count() == 1  # the event stays for the feed
    assert admin.get(f"/webhooks/{subscription.id}").status_code == 404


# --- Validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "url", "This field is required."),
        ({"url": 5}, "url", "Must be a string, got a number."),
        ({"url": "ftp://127.0.0.1/x"}, "url", "Must be an http or https URL"),
        ({"url": "127.0.0.1:8000/hook"}, "url", "Must be an http or https URL"),
        ({"url": "http:///hook"}, "url", "Must be an http or https URL"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "url", "Must not contain credentials"),
        ({"url": "http://127.0.0.1/a b"}, "url", "Must not contain spaces or control"),
        ({"url": "http://127.0.0.1/\x00"}, "url", "Must not contain spaces or control"),
        ({"url": "http://127.0.0.1/\n"}, "url", "Must not contain spaces or control"),
        ({"url": "http://127.0.0.1:99999/"}, "url", "Must have a port from 1 to 65535."),
        ({"url": "http://127.0.0.1:0/"}, "url", "Must have a port from 1 to 65535."),
        ({"url": "http://127.0.0.1/" + "a" * 2000}, "url", "Must be at most 2000 characters."),
        ({"url": "http://no-such-host.invalid/"}, "url", "could not be resolved"),
        ({"url": RECEIVER, "event_types": "score.created"}, "event_types", "Must be a list"),
        ({"url": RECEIVER, "event_types": ["score.moved"]}, "event_types", "Each must be"),
        (
            {"url": RECEIVER, "event_types": ["score.created", "score.created"]},
            "event_types",
            "score.created is listed twice.",
        ),
        ({"url": RECEIVER, "active": "yes"}, "active", "Must be a boolean"),
        ({"url": RECEIVER, "active": None}, "active", "Must be a boolean"),
        ({"url": RECEIVER, "secret": "s3cret"}, "secret", "Must be whsec_"),
        ({"url": RECEIVER, "secret": "whsec_" + "A" * 20}, "secret", "Must be whsec_"),
        ({"url": RECEIVER, "secret": "whsec_!!notbase64!!"}, "secret", "Must be whsec_"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(admin, body, field, message) -> None:
    response = admin.post("/webhooks", body, format="json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert not WebhookSubscription.objects.exists()


@pytest.mark.parametrize("body", ["[]", '"x"', "null", "5"])
def test_a_body_that_is_not_an_object_is_a_400(admin, body) -> None:
    response = admin.generic("POST", "/webhooks", body, content_type="application/json")

    assert response.status_code == 400
    assert "non_field_errors" in response.json()["errors"]


# --- Addresses a subscriber may have (SSRF) -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "Must not reach 127.0.0.1: a loopback address"),
        ("http://127.1.2.3/hook", "Must not reach 127.1.2.3: a loopback address"),
        ("http://[::1]:8000/hook", "Must not reach ::1: a loopback address"),
        ("http://localhost:8000/hook", "Must not reach localhost resolves to 127.0.0.1"),
        ("http://10.1.2.3/hook", "Must not reach 10.1.2.3: a private address"),
        ("http://172.16.0.1/hook", "Must not reach 172.16.0.1: a private address"),
        ("https://192.168.1.10/hook", "Must not reach 192.168.1.10: a private address"),
        ("http://169.254.169.254/latest", "Must not reach 169.254.169.254: a link-local"),
        ("http://[fe80::1]/hook", "Must not reach fe80::1: a link-local address"),
        ("http://[fd00::1]/hook", "Must not reach fd00::1: a private address"),
        ("http://[::ffff:127.0.0.1]/hook", "Must not reach ::ffff:127.0.0.1: a loopback"),
        ("http://100.64.0.1/hook", "Must not reach 100.64.0.1: not a public address"),
        ("http://0.0.0.0:8000/hook", "Must not reach 0.0.0.0: an unspecified address"),
        ("http://224.0.0.1/hook", "Must not reach 224.0.0.1: a multicast address"),
        ("http://240.0.0.1/hook", "Must not reach 240.0.0.1: a reserved address"),
    ],
)
def test_a_url_reaching_a_non_public_address_is_refused(admin, settings, url, reason) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False

    response = admin.post("/webhooks", {"url": url}, format="json")

    assert response.status_code == 400
    [message] = response.json()["errors"]["url"]
    assert message.startswith(reason), message
    assert not WebhookSubscription.objects.exists()


def test_a_url_reaching_localhost_names_what_its_host_resolves_to(admin, settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False

    response = admin.post("/webhooks", {"url": "http://localhost:8000/hook"}, format="json")

    assert response.json()["errors"] == {
        "url": [
            "Must not reach localhost resolves to 127.0.0.1: a loopback address "
            "(WEBHOOK_ALLOW_PRIVATE is off)."
        ]
    }


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/hook", "http://localhost:8000/hook", "http://10.1.2.3/x"]
)
def test_allow_private_lets_loopback_and_private_addresses_through(admin, url) -> None:
    response = admin.post("/webhooks", {"url": url}, format="json")

    assert response.status_code == 201
    assert response.json()["url"] == url


@pytest.mark.parametrize("url", ["http://0.0.0.0/hook", "http://[::]/hook", "http://239.1.1.1/"])
def test_unspecified_and_multicast_addresses_are_refused_even_when_private_is_allowed(
    admin, url
) -> None:
    assert admin.post("/webhooks", {"url": url}, format="json").status_code == 400


def test_a_patch_to_a_refused_url_is_a_400_and_changes_nothing(admin, settings, subscription):
    settings.WEBHOOK_ALLOW_PRIVATE = False

    response = admin.patch(
        f"/webhooks/{subscription.id}", {"url": "http://10.0.0.1/"}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["url"]
    assert stored(subscription.id)["url"] == RECEIVER


@pytest.mark.parametrize(
    "url", ["https://1.1.1.1/hook", "http://8.8.8.8:8080/x?y=1", "https://[2606:4700::1111]/"]
)
def test_a_url_reaching_public_addresses_only_is_accepted(settings, url) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False

    assert check_webhook_url(url) == url  # resolved (literal addresses), not contacted


@pytest.mark.parametrize(
    ("address", "allow_private", "refusal"),
    [
        ("93.184.215.14", False, None),
        ("127.0.0.1", True, None),
        ("10.0.0.1", True, None),
        ("169.254.169.254", True, None),
        ("0.0.0.0", True, "an unspecified address"),  # noqa: S104 (an address refused)
        ("ff02::1", True, "a multicast address"),
        ("::ffff:10.0.0.1", False, "a private address"),
        ("192.0.2.1", False, "a private address"),  # documentation: never a subscriber
    ],
)
def test_address_refusal(address, allow_private, refusal) -> None:
    assert address_refusal(address, allow_private=allow_private) == refusal


def test_check_webhook_url_raises_invalid_value_with_the_apis_words(settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False

    with pytest.raises(InvalidValue, match="a loopback address"):
        check_webhook_url("http://127.0.0.1/")


# --- The schema ----------------------------------------------------------------------------


def test_the_schema_names_the_webhook_operations(anon) -> None:
    schema = anon.get("/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    operations = {
        (path, method): (operation["operationId"], operation["tags"])
        for path, item in schema["paths"].items()
        if path.startswith("/webhooks")
        for method, operation in item.items()
    }
    assert operations == {
        ("/webhooks", "get"): ("webhooks_list", ["webhooks"]),
        ("/webhooks", "post"): ("webhooks_create", ["webhooks"]),
        ("/webhooks/{id}", "get"): ("webhooks_retrieve", ["webhooks"]),
        ("/webhooks/{id}", "patch"): ("webhooks_update", ["webhooks"]),
        ("/webhooks/{id}", "delete"): ("webhooks_destroy", ["webhooks"]),
    }
    created = schema["paths"]["/webhooks"]["post"]["responses"]["201"]["content"]
    component = created["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "secret" in schema["components"]["schemas"][component]["properties"]
    shown_ = schema["paths"]["/webhooks/{id}"]["get"]["responses"]["200"]["content"]
    component = shown_["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][component]["properties"]) == {
        "id",
        "url",
        "event_types",
        "active",
        "created_at",
    }


def test_created_at_is_an_iso_timestamp(admin) -> None:
    created = admin.post("/webhooks", {"url": RECEIVER}, format="json").json()

    assert created["created_at"].endswith("Z")
    assert datetime.fromisoformat(created["created_at"])


# --- bin/run's demo subscriber ---------------------------------------------------------------


def test_seed_demo_subscribes_the_demo_subscriber_anew_each_time() -> None:
    from django.core.management import call_command

    first, second = new_secret(), new_secret()
    out = io.StringIO()
    call_command("seed_demo", "--users", "1", "--webhook", RECEIVER, "--webhook-secret", first,
                 stdout=out)  # fmt: skip
    call_command("seed_demo", "--webhook", RECEIVER, "--webhook-secret", second, stdout=out)

    [subscription] = WebhookSubscription.objects.all()
    assert (subscription.url, subscription.secret) == (RECEIVER, second)
    assert f"Webhook subscription {subscription.id}: {RECEIVER}" in out.getvalue()


def test_seed_demo_refuses_a_bad_secret() -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="secret"):
        call_command("seed_demo", "--webhook", RECEIVER, "--webhook-secret", "nope")
