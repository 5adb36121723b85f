"""``/webhooks``: webhook subscriptions, for privileged callers (spec: "Score events"). The
rules are ``scores.webhooks``'; this module only declares the routes and their shapes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from scores.audit import actor_of
from scores.callers import caller_of
from scores.models import WebhookSubscription
from scores.pagination import IdCursorPagination
from scores.permissions import IsPrivileged, IsScoresCaller
from scores.schema import error_responses
from scores.serializers import ErrorSerializer, answer_example, request_examples
from scores.validation import parse_pk_text
from scores.webhooks import (
    EVENT_TYPES,
    URL_MAX,
    WebhookInvalid,
    parse_subscription,
    subscription_create,
    subscription_delete,
    subscription_update,
)

NO_SUCH_WEBHOOK = "No such webhook subscription."
URL_HELP = (
    "Where events are POSTed: http or https. Every address its host resolves to must be "
    "public (loopback, private and link-local addresses are refused unless the service runs "
    "with WEBHOOK_ALLOW_PRIVATE=true)."
)
ACTIVE_HELP = (
    "Whether events are delivered. A subscription made active again is sent the events it "
    "missed (those still kept: EVENTS_RETENTION_DAYS)."
)

EXAMPLE_URL = "https://hooks.example.com/evalsvc"
EXAMPLE_SECRET = "whsec_aByTMdrIjrJ1FZByUYD+phMgEUxOVsMnfRaY7PJ4nKI="  # noqa: S105 (an example)
WEBHOOK_EXAMPLE = {
    "id": 3,
    "url": EXAMPLE_URL,
    "event_types": ["score.created", "score.updated"],
    "active": True,
    "created_at": "2026-11-26T14:24:20.123456Z",
}


@answer_example(WEBHOOK_EXAMPLE)
class WebhookSerializer(serializers.Serializer):
    """A webhook subscription as the API shows it. Bodies are read by
    ``scores.webhooks.parse_subscription``."""

    id = serializers.IntegerField(read_only=True)
    url = serializers.CharField(max_length=URL_MAX, help_text=URL_HELP)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=list(EVENT_TYPES)),
        required=False,
        help_text="The event types to deliver, each once; empty (the default): all of them.",
    )
    active = serializers.BooleanField(required=False, default=True, help_text=ACTIVE_HELP)
    created_at = serializers.DateTimeField(read_only=True)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        try:
            return parse_subscription(data, creating=not self.partial)
        except WebhookInvalid as exc:
            raise serializers.ValidationError(exc.errors) from exc


@request_examples(
    ("Pause deliveries", {"active": False}),
    ("Another URL", {"url": "https://hooks.example.com/evalsvc/v2"}),
    ("Every event type", {"event_types": []}),
)
class WebhookChangeSerializer(WebhookSerializer):
    """A ``PATCH /webhooks/{id}`` body: any of ``url``, ``event_types`` and ``active``; what it
    leaves out is kept (so nothing is required and nothing has a default)."""

    url = serializers.CharField(max_length=URL_MAX, required=False, help_text=URL_HELP)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=list(EVENT_TYPES)),
        required=False,
        help_text="The event types to deliver, each once; empty: all of them.",
    )
    active = serializers.BooleanField(required=False, help_text=ACTIVE_HELP)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Every event type, a secret generated",
            value={"url": EXAMPLE_URL},
            request_only=True,
        ),
        OpenApiExample(
            "Some event types, the caller's secret",
            value={
                "url": EXAMPLE_URL,
                "event_types": ["score.created", "score.updated"],
                "secret": EXAMPLE_SECRET,
            },
            request_only=True,
        ),
        OpenApiExample(
            "Created", value={**WEBHOOK_EXAMPLE, "secret": EXAMPLE_SECRET}, response_only=True
        ),
    ]
)
class WebhookCreateSerializer(WebhookSerializer):
    """A ``POST /webhooks`` body, and its answer: the only one that shows the secret."""

    secret = serializers.CharField(
        required=False,
        help_text="The signing secret (Standard Webhooks): whsec_ and the base64 of 24 to 64 "
        "random bytes. Generated when left out; shown only in this answer.",
    )


WEBHOOK_ID_PATH = OpenApiParameter(
    "id",
    {"type": "integer", "minimum": 1},
    OpenApiParameter.PATH,
    description="The subscription's id.",
)

NOT_FOUND = OpenApiResponse(
    ErrorSerializer,
    description="No webhook subscription with this id.",
    examples=[OpenApiExample("Error 404", value={"detail": NO_SUCH_WEBHOOK})],
)


class WebhookViewSet(viewsets.GenericViewSet):
    """Webhook subscriptions: where the delivery worker POSTs score events."""

    permission_classes = [IsScoresCaller, IsPrivileged]
    serializer_class = WebhookSerializer
    pagination_class = IdCursorPagination
    lookup_value_regex = "[0-9]+"
    queryset = WebhookSubscription.objects.all()

    def get_object(self) -> WebhookSubscription:
        """The subscription of a ``{pk}`` route (404 when there is none)."""
        subscription_id = parse_pk_text(self.kwargs[self.lookup_field])
        subscription = (
            None
            if subscription_id is None
            else WebhookSubscription.objects.filter(id=subscription_id).first()
        )
        if subscription is None:
            raise exceptions.NotFound(NO_SUCH_WEBHOOK)
        return subscription

    @extend_schema(
        operation_id="webhooks_list",
        summary="List the webhook subscriptions (privileged callers)",
        responses={200: WebhookSerializer(many=True), **error_responses(400, 403)},
        tags=["webhooks"],
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(WebhookSerializer(page, many=True).data)

    @extend_schema(
        operation_id="webhooks_create",
        summary="Subscribe a URL to score events (privileged callers)",
        request=WebhookCreateSerializer,
        responses={
            201: OpenApiResponse(
                WebhookCreateSerializer,
                description="Created; the answer shows the secret, which no later answer does.",
            ),
            **error_responses(400, 403, 413, 415),
        },
        tags=["webhooks"],
    )
    def create(self, request: Request) -> Response:
        values = self._validated(request.data, partial=False)
        subscription = subscription_create(actor=actor_of(caller_of(request)), **values)
        answer = WebhookCreateSerializer(subscription).data
        return Response(answer, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="webhooks_retrieve",
        summary="One webhook subscription (privileged callers)",
        parameters=[WEBHOOK_ID_PATH],
        responses={200: WebhookSerializer, **error_responses(403), 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(WebhookSerializer(self.get_object()).data)

    @extend_schema(
        operation_id="webhooks_update",
        summary="Change a webhook subscription's url, event_types or active (privileged callers)",
        parameters=[WEBHOOK_ID_PATH],
        request=WebhookChangeSerializer,
        responses={200: WebhookSerializer, **error_responses(400, 403, 413, 415), 404: NOT_FOUND},
        tags=["webhooks"],
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        subscription = self.get_object()
        changes = self._validated(request.data, partial=True)
        subscription_update(
            actor=actor_of(caller_of(request)), subscription=subscription, changes=changes
        )
        return Response(WebhookSerializer(subscription).data)

    @extend_schema(
        operation_id="webhooks_destroy",
        summary="Delete a webhook subscription and its deliveries (privileged callers)",
        parameters=[WEBHOOK_ID_PATH],
        responses={
            204: OpenApiResponse(description="Deleted."),
            **error_responses(403),
            404: NOT_FOUND,
        },
        tags=["webhooks"],
    )
    def destroy(self, request: Request, pk: str) -> Response:
        subscription_delete(actor=actor_of(caller_of(request)), subscription=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _validated(data: Any, *, partial: bool) -> dict[str, Any]:
        serializer = WebhookCreateSerializer(data=data, partial=partial)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)
