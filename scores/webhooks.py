"""Webhook subscriptions (spec: "Score events"): what a subscription may be, and the one way to
create, change and delete one (``/webhooks`` and the admin both call these functions).

**URLs.** A subscriber URL is ``http`` or ``https`` with a host and no credentials. Every
address its host resolves to (``socket.getaddrinfo``, all of them) must be a public one:
loopback, private, link-local, reserved, shared and other non-global addresses are refused
unless ``WEBHOOK_ALLOW_PRIVATE`` is true; unspecified (``0.0.0.0``, ``::``) and multicast
addresses always are. The delivery worker checks again before its attempts (a check is used
for at most 10 s) and connects to an address it checked (``resolve_target``), so a name that
resolves elsewhere later (DNS rebinding) cannot turn a delivery towards the service's own
network.

**Secrets.** Standard Webhooks secrets: ``whsec_`` and the base64 of 24 to 64 random bytes,
generated (32 bytes) when the caller gives none; the ``standardwebhooks`` library signs with
it (``scores.delivery``).
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import ipaddress
import logging
import os
import re
import secrets
import socket
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from scores import audit
from scores.database import database_breaker
from scores.models import ScoreEvent, WebhookDelivery, WebhookSubscription
from scores.validation import REQUIRED, InvalidValue, parse_bool
from scores.writes import json_type

logger = logging.getLogger(__name__)

URL_MAX = 2000
SCHEMES = ("http", "https")
EVENT_TYPES = ScoreEvent.TYPES
SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix of every secret, not one)
SECRET_BYTES = 32  # generated secrets; given ones may have 24 to 64
RESOLVE_TIMEOUT = 5.0  # seconds to resolve a subscriber's host name
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")

SCHEME_INVALID = "Must be an http or https URL, e.g. https://hooks.example.com/evalsvc."
WHSEC_INVALID = (
    "Must be whsec_ followed by the base64 of 24 to 64 random bytes; leave it out to have one "
    "generated."
)


# --- URLs and the addresses they may reach --------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a webhook URL points: its parts, and the addresses (checked) to connect to."""

    scheme: str
    host: str  # the name as HTTP and TLS carry it (ASCII, IDNA-encoded)
    port: int
    path: str  # path and query, as the request line carries them
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_webhook_url(url: Any) -> str:
    """A subscriber URL's syntax (no name resolution): a string of at most ``URL_MAX``
    characters, no spaces or control characters, ``http``/``https``, a host, no credentials,
    a valid port.

    Raises:
        InvalidValue: saying what is wrong, in the API's words.
    """
    if not isinstance(url, str):
        raise InvalidValue(f"Must be a string, got {json_type(url)}.")
    if len(url) > URL_MAX:
        raise InvalidValue(f"Must be at most {URL_MAX} characters.")
    if _CONTROL_OR_SPACE.search(url):
        raise InvalidValue("Must not contain spaces or control characters.")
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not parts.netloc:
        raise InvalidValue(SCHEME_INVALID)
    if parts.username is not None or parts.password is not None:
        raise InvalidValue("Must not contain credentials (user:password@).")
    if not parts.hostname:
        raise InvalidValue("Must name a host.")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidValue("Must have a port from 1 to 65535.") from exc
    if port == 0:
        raise InvalidValue("Must have a port from 1 to 65535.")
    _ascii_host(parts.hostname)
    return url


def _ascii_host(hostname: str) -> str:
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidValue("Must name a valid host.") from exc


_resolvers: dict[int, concurrent.futures.ThreadPoolExecutor] = {}  # per process (fork)


def _resolver() -> concurrent.futures.ThreadPoolExecutor:
    pid = os.getpid()
    if pid not in _resolvers:
        _resolvers.clear()  # a forked child's copy of its parent's pool has no threads
        _resolvers[pid] = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="webhook-dns"
        )
    return _resolvers[pid]


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, within
    ``RESOLVE_TIMEOUT`` (``getaddrinfo`` has no deadline of its own)."""
    future = _resolver().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=RESOLVE_TIMEOUT)
    except concurrent.futures.TimeoutError as exc:
        raise InvalidValue(
            f"Its host {host} could not be resolved within {RESOLVE_TIMEOUT:g} s."
        ) from exc
    except (OSError, UnicodeError) as exc:
        raise InvalidValue(f"Its host {host} could not be resolved.") from exc
    addresses = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 zone (fe80::1%eth0) aside
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InvalidValue(f"Its host {host} could not be resolved.")
    return addresses


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why a subscriber may not be reached at ``address``, or None if it may."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if allow_private:
        return None
    for kind, applies in (
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a reserved address", ip.is_reserved),
        ("a private address", ip.is_private),
        ("not a public address", not ip.is_global),
    ):
        if applies:
            return kind
    return None


def resolve_target(url: str) -> Target:
    """``url`` checked (``parse_webhook_url``) and its host resolved, every address allowed.

    Raises:
        InvalidValue: the URL is not one, its host does not resolve, or an address it resolves
            to is refused (the message names it and why).
    """
    parse_webhook_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    hostname = parts.hostname or ""
    host = _ascii_host(hostname)
    port = parts.port or (443 if scheme == "https" else 80)
    addresses = _resolve(host, port)
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE
    for address in addresses:
        refusal = address_refusal(address, allow_private=allow_private)
        if refusal is not None:
            named = "" if address == host else f"{host} resolves to "
            raise InvalidValue(
                f"Must not reach {named}{address}: {refusal}"
                + ("." if allow_private else " (WEBHOOK_ALLOW_PRIVATE is off).")
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path, tuple(addresses))


def check_webhook_url(url: Any) -> str:
    """A subscriber URL as it is stored, once ``resolve_target`` accepts it.

    Raises:
        InvalidValue: see ``resolve_target``.
    """
    resolve_target(parse_webhook_url(url))
    return str(url)


# --- Secrets and event types ----------------------------------------------------------------


def new_secret() -> str:
    """A new Standard Webhooks secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def parse_secret(value: Any) -> str:
    """A secret given by the caller: ``whsec_`` and the base64 of 24 to 64 bytes."""
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise InvalidValue(WHSEC_INVALID)
    try:
        key = base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidValue(WHSEC_INVALID) from exc
    if not 24 <= len(key) <= 64:
        raise InvalidValue(WHSEC_INVALID)
    return value


def parse_event_types(value: Any) -> list[str]:
    """A list of distinct event types (empty: every type)."""
    if not isinstance(value, list):
        raise InvalidValue(f"Must be a list of event types, got {json_type(value)}.")
    types: list[str] = []
    for item in value:
        if item not in EVENT_TYPES:
            raise InvalidValue(f"Each must be one of {', '.join(EVENT_TYPES)}.")
        if item in types:
            raise InvalidValue(f"{item} is listed twice.")
        types.append(item)
    return types


class WebhookInvalid(ValueError):
    """A subscription's fields refused, as ``{field: [message, ...]}``."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


FIELDS = {
    "url": check_webhook_url,
    "event_types": parse_event_types,
    "active": parse_bool,
    "secret": parse_secret,
}


def parse_subscription(data: Any, *, creating: bool) -> dict[str, Any]:
    """The fields of a ``POST /webhooks`` (``creating``) or ``PATCH /webhooks/{id}`` body.

    Raises:
        WebhookInvalid: every problem, under its field's name (a changed ``secret`` included:
            a secret is set once).
    """
    if not isinstance(data, Mapping):
        raise WebhookInvalid({"non_field_errors": [f"Expected an object, got {json_type(data)}."]})
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, parse in FIELDS.items():
        if name not in data:
            if creating and name == "url":
                errors[name] = [REQUIRED]
            continue
        if name == "secret" and not creating:
            errors[name] = ["Cannot be changed: create a new subscription for a new secret."]
            continue
        try:
            values[name] = parse(data[name])
        except InvalidValue as exc:
            errors[name] = [str(exc)]
    if errors:
        raise WebhookInvalid(errors)
    return values


# --- The services ---------------------------------------------------------------------------


def subscription_create(
    *,
    actor: str,
    url: str,
    event_types: Sequence[str] = (),
    active: bool = True,
    secret: str | None = None,
) -> WebhookSubscription:
    """A new subscription (values checked already: ``parse_subscription``), its secret
    generated when none is given, and its audit entry (``actor``: ``scores.audit``). It
    receives the events numbered after its creation."""
    with transaction.atomic():
        newest = ScoreEvent.objects.aggregate(newest=Max("sequence"))["newest"]
        subscription = WebhookSubscription.objects.create(
            url=url,
            event_types=list(event_types),
            active=active,
            secret=secret or new_secret(),
            cursor=newest or 0,
        )
        audit.record(actor, "webhook.created", f"webhook {subscription.id}")
    return subscription


def subscription_update(
    *, actor: str, subscription: WebhookSubscription, changes: Mapping[str, Any]
) -> WebhookSubscription:
    """Apply ``changes`` (of ``url``, ``event_types``, ``active``; checked already), save them
    and audit which fields changed. A subscription made active again resumes after the last
    event it was given."""
    fields = [name for name in ("url", "event_types", "active") if name in changes]
    for name in fields:
        setattr(subscription, name, changes[name])
    if fields:
        with transaction.atomic():
            subscription.save(update_fields=fields)
            audit.record(
                actor, "webhook.changed", f"webhook {subscription.id} ({', '.join(fields)})"
            )
    return subscription


def subscription_delete(*, actor: str, subscription: WebhookSubscription) -> None:
    """Delete the subscription and its deliveries (sent or not), with its audit entry."""
    with transaction.atomic():
        target = f"webhook {subscription.id}"
        subscription.delete()
        audit.record(actor, "webhook.deleted", target)


def deliveries_send_again(*, ids: Collection[int]) -> int:
    """Make the failed deliveries among ``ids`` pending again, due now, with a fresh run of
    retries; how many."""
    return WebhookDelivery.objects.filter(
        id__in=list(ids), status=WebhookDelivery.Status.FAILED
    ).update(status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now(), attempts=0)


# --- The backlog, for the metrics -----------------------------------------------------------

BACKLOG_STATEMENT_TIMEOUT = "1s"
# The oldest of: an active subscription's pending deliveries; the events numbered after the
# least advanced active subscription's cursor (not yet turned into deliveries); the events not
# yet numbered, while any subscription is active. Each is one index lookup.
_OLDEST_UNDELIVERED = """
SELECT
  (SELECT e.time FROM score_events e WHERE e.sequence = (
      SELECT min(d.sequence) FROM webhook_deliveries d
      JOIN webhook_subscriptions s ON s.id = d.subscription_id
      WHERE d.status = 'pending' AND s.active)),
  (SELECT e.time FROM score_events e
      WHERE e.sequence > (SELECT min(s.cursor) FROM webhook_subscriptions s WHERE s.active)
      ORDER BY e.sequence LIMIT 1),
  (SELECT e.time FROM score_events e
      WHERE e.sequence IS NULL
      AND EXISTS (SELECT 1 FROM webhook_subscriptions s WHERE s.active)
      ORDER BY e.id LIMIT 1)
"""


def oldest_undelivered_at() -> datetime | None:
    """When the oldest event that an active subscription has not received yet happened, or
    None when every active subscription has all of them. On PostgreSQL the query may take at
    most ``BACKLOG_STATEMENT_TIMEOUT``."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SET LOCAL statement_timeout = '{BACKLOG_STATEMENT_TIMEOUT}'")
        cursor.execute(_OLDEST_UNDELIVERED)
        times = [moment for moment in cursor.fetchone() if moment is not None]
    if not times:
        return None
    return min(_aware(moment) for moment in times)


def _aware(moment: datetime | str) -> datetime:
    """A timestamp column read by raw SQL (SQLite gives its text, in UTC)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class BacklogCollector(Collector):
    """``evalsvc_webhook_oldest_undelivered_event_age_seconds``, computed when scraped (0 when
    nothing is owed; absent while the database does not answer)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if database_breaker.opened:
            return
        try:
            oldest = oldest_undelivered_at()
        except Exception:
            logger.warning("webhook backlog: the database did not answer", exc_info=True)
            return
        age = 0.0 if oldest is None else max(0.0, (timezone.now() - oldest).total_seconds())
        yield GaugeMetricFamily(
            "evalsvc_webhook_oldest_undelivered_event_age_seconds",
            "Age of the oldest score event an active webhook subscription has not received.",
            value=age,
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # collected only when scraped: registering must not query


REGISTRY.register(BacklogCollector())
