"""HTTP endpoints. Views declare (permissions, serializers, pagination, filters) and call the
selectors (reads, visibility) and services (writes); they decide no rule themselves."""

from __future__ import annotations

from functools import partial
from typing import Any

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.db import connection, router
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import csrf
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from scores.audit import actor_of
from scores.callers import Caller, caller_of
from scores.csv_export import CSV_HEADER, csv_chunks
from scores.events import as_cloudevents, wait_for_events
from scores.exceptions import Conflict, DatabaseUnavailable, json_error
from scores.filters import ExerciseStatsFilter, ScoreFilter
from scores.models import Score
from scores.pagination import AttemptCursorPagination, ExerciseCursorPagination, IdCursorPagination
from scores.permissions import IsPrivileged, IsScoresCaller, action_of, target_user_id
from scores.schema import (
    EXERCISE_ID_PATH,
    REASON_QUERY,
    SCORE_ID_PATH,
    USER_ID_QUERY,
    error_responses,
    replayed,
    write_errors,
)
from scores.selectors import (
    ScoreRow,
    attempts_of_score,
    exercise_stats,
    score_of_user,
    score_visible,
    scores_for_export,
    scores_of_user,
    scores_visible_to,
    user_summary,
    with_rates,
)
from scores.serializers import (
    AttemptSerializer,
    BulkResultSerializer,
    BulkSerializer,
    EventPageSerializer,
    ExerciseStatsSerializer,
    PingSerializer,
    ScoreCorrectSerializer,
    ScoreSerializer,
    ScoreUpdateSerializer,
    ScoreWriteSerializer,
    StatusSerializer,
    SummarySerializer,
)
from scores.services import (
    AttemptConflict,
    ScoreExists,
    ScoreNotFound,
    Write,
    WriteMode,
    score_delete,
    score_write,
    scores_upsert_many,
)
from scores.validation import (
    MAX_PK,
    InvalidValue,
    parse_path_id,
    parse_pk_text,
    parse_range_text,
    parse_reason_text,
    parse_seconds_text,
)

NO_SUCH_SCORE = "No such score."
EVENTS_MAX = 1000  # events per page
WAIT_MAX = 30  # seconds a long poll may wait


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def query_user_id(request: Request) -> int | None:
    """``?user_id=``, if given."""
    raw = request.query_params.get("user_id")
    if raw is None:
        return None
    try:
        return parse_path_id(raw)
    except InvalidValue as exc:
        raise exceptions.ValidationError({"user_id": [str(exc)]}) from exc


def path_exercise_id(segment: str) -> int:
    try:
        return parse_path_id(segment)
    except InvalidValue as exc:
        raise exceptions.ValidationError({"exercise_id": [str(exc)]}) from exc


def attempt_conflict(exc: AttemptConflict) -> Conflict:
    """The 409 of an attempt_id logged with other content, naming the differing fields."""
    where = "" if exc.index is None else f" (scores item {exc.index})"
    errors: dict[str, Any] = {field: ["Differs from the recorded attempt."] for field in exc.fields}
    if exc.index is not None:
        errors = {"scores": {str(exc.index): errors}}
    return Conflict(
        f"This attempt_id was already recorded with a different {', '.join(exc.fields)}{where}; "
        "a retry must repeat the first request exactly.",
        errors=errors,
    )


def score_response(score: ScoreRow, created: bool = False) -> Response:
    return Response(score, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema_view(
    list=extend_schema(
        summary="List the scores visible to the caller",
        responses={200: ScoreSerializer(many=True), **error_responses(400, 403)},
    ),
    create=extend_schema(
        summary="Create a score",
        request=ScoreWriteSerializer,
        responses={201: ScoreSerializer, 200: replayed(200), **write_errors(404)},
    ),
    retrieve=extend_schema(
        summary="One score",
        parameters=[SCORE_ID_PATH],
        responses={200: ScoreSerializer, **error_responses(403, 404)},
    ),
    update=extend_schema(
        summary="Set a score's `correct`",
        parameters=[SCORE_ID_PATH],
        request=ScoreUpdateSerializer,
        responses={200: ScoreSerializer, 201: replayed(201), **write_errors(404)},
    ),
    partial_update=extend_schema(
        summary="Set a score's `correct`",
        parameters=[SCORE_ID_PATH],
        request=ScoreUpdateSerializer,
        responses={200: ScoreSerializer, 201: replayed(201), **write_errors(404)},
    ),
    destroy=extend_schema(
        summary="Delete a score (privileged callers)",
        description="The deletion is written to the audit log, with the caller and `reason`.",
        parameters=[SCORE_ID_PATH, REASON_QUERY],
        responses={
            204: OpenApiResponse(description="Deleted."),
            **error_responses(400, 403, 404),
        },
    ),
)
class ScoreViewSet(viewsets.GenericViewSet):
    """Scores: one current result per (user, exercise)."""

    serializer_class = ScoreSerializer
    pagination_class = IdCursorPagination
    filterset_class = ScoreFilter
    lookup_value_regex = "[0-9]+"
    privileged_actions = ("destroy", "bulk", "export")
    write_serializers = {
        "create": ScoreWriteSerializer,
        "upsert": ScoreWriteSerializer,
        "update": ScoreUpdateSerializer,
        "partial_update": ScoreUpdateSerializer,
        "mine_for_exercise": ScoreCorrectSerializer,
        "bulk": BulkSerializer,
    }

    def get_serializer_class(self) -> type[serializers.Serializer]:
        if self.request is not None and self.request.method not in ("GET", "HEAD", "DELETE"):
            found = self.write_serializers.get(action_of(self.request, self) or "")
            if found is not None:
                return found
        return ScoreSerializer

    def get_queryset(self) -> Any:
        if self.action == "stats":
            return exercise_stats()
        if getattr(self, "swagger_fake_view", False):  # schema generation: no caller
            return Score.objects.none()
        return scores_visible_to(self.caller)

    def get_object(self) -> ScoreRow:
        """The score of a ``{pk}`` route, if the caller may see it (DRF's OPTIONS asks for it
        before describing PUT; the ``user/{exercise_id}`` route has none)."""
        pk = self.kwargs.get(self.lookup_field)
        if pk is None:
            return None  # type: ignore[return-value]
        score_id = parse_pk_text(pk)
        score = None if score_id is None else score_visible(caller=self.caller, score_id=score_id)
        if score is None:
            raise exceptions.NotFound(NO_SUCH_SCORE)
        self.check_object_permissions(self.request, score)
        return score

    @property
    def caller(self) -> Caller:
        return caller_of(self.request)

    def _page(self, rows: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(rows))
        return self.get_paginated_response(page)

    def _write(
        self,
        data: dict[str, Any],
        user_id: int,
        exercise_id: int,
        mode: WriteMode,
        correction: bool = False,
    ) -> Response:
        """Apply a validated write body through the write service; 201 when it created the
        score (also when replayed), else 200."""
        write = Write(**{**data, "user_id": user_id, "exercise_id": exercise_id})
        try:
            result = score_write(
                write=write, recorded_by=self.caller.name, mode=mode, correction=correction
            )
        except ScoreExists as exc:
            raise Conflict(
                "A score for this user and exercise already exists; "
                "PATCH /scores updates it (upsert)."
            ) from exc
        except ScoreNotFound as exc:
            raise exceptions.NotFound(NO_SUCH_SCORE) from exc
        except AttemptConflict as exc:
            raise attempt_conflict(exc) from exc
        return score_response(result.score, result.created)

    def list(self, request: Request) -> Response:
        return self._page(self.get_queryset())

    def create(self, request: Request) -> Response:
        data = validated(ScoreWriteSerializer, request.data)
        user_id = target_user_id(self.caller, data.get("user_id"))
        return self._write(data, user_id, data["exercise_id"], WriteMode.CREATE)

    @extend_schema(
        operation_id="scores_upsert",
        summary="Create or update a score (upsert)",
        description="The old client's call: the caller's score for `exercise_id` (a privileged "
        "caller names the user with `user_id`), created (201) or updated (200) in one "
        "statement. `exercise_id` is required; so is `correct`, unless `points` and "
        "`max_points` are both given (then `correct` is `points == max_points`).",
        request=ScoreWriteSerializer,
        responses={200: ScoreSerializer, 201: ScoreSerializer, **write_errors(404)},
    )
    def upsert(self, request: Request) -> Response:
        data = validated(ScoreWriteSerializer, request.data)
        user_id = target_user_id(self.caller, data.get("user_id"))
        return self._write(data, user_id, data["exercise_id"], WriteMode.UPSERT)

    def retrieve(self, request: Request, pk: str) -> Response:
        return score_response(self.get_object())

    def update(self, request: Request, pk: str) -> Response:
        score = self.get_object()
        data = validated(ScoreUpdateSerializer, request.data)
        changed: dict[str, list[str]] = {
            field: ["Cannot be changed: it identifies the score."]
            for field in ("user_id", "exercise_id")
            if field in data and data[field] != score[field]
        }
        if changed:
            raise exceptions.ValidationError(changed)
        return self._write(
            data,
            score["user_id"],
            score["exercise_id"],
            WriteMode.UPDATE,
            correction=self.caller.privileged,
        )

    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk)

    def destroy(self, request: Request, pk: str) -> Response:
        score = self.get_object()
        reason = query_value(request, "reason", parse_reason_text, None)
        if not score_delete(score_id=score["id"], actor=actor_of(self.caller), reason=reason):
            raise exceptions.NotFound(NO_SUCH_SCORE)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _named_user_id(self, request: Request) -> int:
        """The user a /scores/user or summary request is about: ``?user_id=`` if given, else the
        caller (whose visibility the selectors then apply)."""
        requested = query_user_id(request)
        return target_user_id(self.caller, None) if requested is None else requested

    @extend_schema(
        summary="The caller's own scores",
        parameters=[USER_ID_QUERY],
        responses={200: ScoreSerializer(many=True), **error_responses(400, 403)},
    )
    @action(detail=False, methods=["get"], url_path="user")
    def mine(self, request: Request) -> Response:
        return self._page(scores_of_user(caller=self.caller, user_id=self._named_user_id(request)))

    @extend_schema(
        methods=["GET"],
        summary="The caller's score for one exercise",
        parameters=[EXERCISE_ID_PATH, USER_ID_QUERY],
        responses={200: ScoreSerializer, **error_responses(400, 403, 404)},
    )
    @extend_schema(
        methods=["PUT"],
        operation_id="scores_user_upsert",
        summary="Create or update the caller's score for one exercise (upsert)",
        description="The later client's call (it was `PUT /scores/{exercise_id}`): `correct` is "
        "required unless `points` and `max_points` are both given (then `correct` is "
        "`points == max_points`). 201 created, 200 updated.",
        parameters=[EXERCISE_ID_PATH],
        request=ScoreCorrectSerializer,
        responses={200: ScoreSerializer, 201: ScoreSerializer, **write_errors(404)},
    )
    @action(detail=False, methods=["get", "put"], url_path=r"user/(?P<exercise_id>[^/]+)")
    def mine_for_exercise(self, request: Request, exercise_id: str) -> Response:
        if request.method == "PUT":
            exercise = path_exercise_id(exercise_id)
            data = validated(ScoreCorrectSerializer, request.data)
            user_id = target_user_id(self.caller, data.get("user_id", query_user_id(request)))
            return self._write(data, user_id, exercise, WriteMode.UPSERT)
        return score_response(self._own_score(request, exercise_id))

    def _own_score(self, request: Request, exercise_id: str) -> ScoreRow:
        """The score of /scores/user/{exercise_id}: the caller's, or ?user_id='s when visible.

        Raises:
            NotFound: no such score, or not visible to the caller.
        """
        exercise = path_exercise_id(exercise_id)
        user_id = self._named_user_id(request)
        score = score_of_user(caller=self.caller, user_id=user_id, exercise_id=exercise)
        if score is None:
            raise exceptions.NotFound("No score for this exercise.")
        return score

    @extend_schema(
        summary="A score's attempt log, oldest first",
        parameters=[SCORE_ID_PATH],
        responses={200: AttemptSerializer(many=True), **error_responses(400, 403, 404)},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="attempts",
        pagination_class=AttemptCursorPagination,
        filter_backends=[],
    )
    def attempts(self, request: Request, pk: str) -> Response:
        score = self.get_object()
        return self.get_paginated_response(self.paginate_queryset(attempts_of_score(score["id"])))

    @extend_schema(
        summary="The attempt log of the caller's score for one exercise, oldest first",
        parameters=[EXERCISE_ID_PATH, USER_ID_QUERY],
        responses={200: AttemptSerializer(many=True), **error_responses(400, 403, 404)},
    )
    @action(
        detail=False,
        methods=["get"],
        url_path=r"user/(?P<exercise_id>[^/]+)/attempts",
        pagination_class=AttemptCursorPagination,
        filter_backends=[],
    )
    def exercise_attempts(self, request: Request, exercise_id: str) -> Response:
        score = self._own_score(request, exercise_id)
        return self.get_paginated_response(self.paginate_queryset(attempts_of_score(score["id"])))

    @extend_schema(
        summary="Progress of one user",
        parameters=[USER_ID_QUERY],
        responses={200: SummarySerializer, **error_responses(400, 403)},
    )
    @action(detail=False, methods=["get"], url_path="summary")
    def summary(self, request: Request) -> Response:
        user_id = target_user_id(self.caller, query_user_id(request))
        return Response(user_summary(user_id=user_id))

    @extend_schema(
        summary="Statistics per exercise",
        responses={200: ExerciseStatsSerializer(many=True), **error_responses(400, 403)},
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="stats/exercises",
        pagination_class=ExerciseCursorPagination,
        filterset_class=ExerciseStatsFilter,
    )
    def stats(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(with_rates(page or []))

    @extend_schema(
        operation_id="scores_bulk_upsert",
        summary="Upsert up to 1000 scores in one transaction (privileged callers)",
        request=BulkSerializer,
        responses={200: BulkResultSerializer, **write_errors()},
    )
    @action(detail=False, methods=["post"], url_path="bulk")
    def bulk(self, request: Request) -> Response:
        writes = validated(BulkSerializer, request.data)["scores"]
        try:
            result = scores_upsert_many(writes=writes, recorded_by=self.caller.name)
        except AttemptConflict as exc:
            raise attempt_conflict(exc) from exc
        return Response({"created": result.created, "updated": result.updated})

    @extend_schema(
        operation_id="scores_export_csv",
        summary="The list's scores as CSV, streamed (privileged callers)",
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description=f"Header {CSV_HEADER.strip()}; points and max_points are empty "
                "for a score without them.",
                examples=[
                    OpenApiExample(
                        "Two scores",
                        value=f"{CSV_HEADER}"
                        "17,4,5,true,2026-11-26T14:24:20.123456Z,2026-11-26T14:30:02.000001Z,,\n"
                        "18,4,6,false,2026-11-26T14:25:00Z,2026-11-26T14:25:00Z,7.50,10.00\n",
                    )
                ],
            ),
            **error_responses(400, 403),
        },
    )
    @action(detail=False, methods=["get"], url_path=r"export\.csv", url_name="export")
    def export(self, request: Request) -> StreamingHttpResponse:
        # The database is chosen now, while a client's recent write still pins it to the
        # primary; the rows are read later, as the response streams.
        queryset = self.filter_queryset(self.get_queryset())
        rows = scores_for_export(queryset.using(router.db_for_read(Score)))
        response = StreamingHttpResponse(csv_chunks(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="scores.csv"'
        return response


def query_value(request: Request, name: str, parse: Any, default: Any) -> Any:
    """A query parameter read by ``parse`` (a 400 naming it if it refuses), or ``default``."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except InvalidValue as exc:
        raise exceptions.ValidationError({name: [str(exc)]}) from exc


class EventsView(APIView):
    """The events feed: score changes as CloudEvents, in commit order."""

    permission_classes = [IsScoresCaller, IsPrivileged]

    @extend_schema(
        operation_id="events_list",
        summary="Score events after a sequence number, oldest first (privileged callers)",
        parameters=[
            OpenApiParameter(
                "after",
                {"type": "integer", "minimum": 0},
                description="Return the events after this sequence (default 0: from the "
                "oldest kept).",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": EVENTS_MAX, "default": 100},
            ),
            OpenApiParameter(
                "wait",
                {"type": "number", "minimum": 0, "maximum": WAIT_MAX, "default": 0},
                description="Seconds to hold the request open until an event arrives (long "
                "poll); answered at once when there are events.",
            ),
        ],
        responses={200: EventPageSerializer, **error_responses(400, 403)},
        tags=["events"],
    )
    def get(self, request: Request) -> Response:
        after = query_value(request, "after", partial(parse_range_text, low=0, high=MAX_PK), 0)
        limit = query_value(
            request, "limit", partial(parse_range_text, low=1, high=EVENTS_MAX), 100
        )
        wait = query_value(request, "wait", partial(parse_seconds_text, maximum=WAIT_MAX), 0.0)
        events = wait_for_events(after, limit, wait)
        return Response(
            {
                "results": as_cloudevents(events),
                "next_after": events[-1].sequence if events else after,
            }
        )


class PublicView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]


class JSONOptionsMixin:
    """For the views that render YAML or HTML (the schema, the docs): their ``OPTIONS``
    description is JSON like the rest of the API (a docs page template given the description
    would fail)."""

    def options(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
        return super().options(request, *args, **kwargs)  # type: ignore[misc]


class SchemaView(JSONOptionsMixin, SpectacularAPIView):
    """The OpenAPI schema."""


class SwaggerView(JSONOptionsMixin, SpectacularSwaggerSplitView):
    """Swagger UI, with its assets served locally; its start-up script is served by the same
    route (``/docs?script``) instead of inline, and its page's style carries the CSP nonce."""

    template_name = "scores/swagger_ui.html"


# Redoc's styles are inserted at run time (styled-components), without a nonce, and its search
# runs in a worker made from a blob: URL.
@method_decorator(csp_update({"style-src": [UNSAFE_INLINE], "worker-src": ["blob:"]}), "dispatch")
class RedocView(JSONOptionsMixin, SpectacularRedocView):
    """Redoc, with its assets served locally and no web fonts (nor Redocly's logo) fetched
    from elsewhere."""

    template_name = "scores/redoc.html"


class PingView(PublicView):
    """The old service's health check."""

    @extend_schema(
        operation_id="scores_ping",
        summary="Ping (the old health check)",
        responses={200: PingSerializer},
        tags=["probes"],
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "success", "message": "pong!"})


class HealthView(PublicView):
    throttle_classes: list[Any] = []

    @extend_schema(
        operation_id="health",
        summary="Liveness: the process answers",
        responses={200: StatusSerializer},
        tags=["probes"],
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyView(PublicView):
    throttle_classes: list[Any] = []

    @extend_schema(
        operation_id="ready",
        summary="Readiness: the database answers",
        responses={200: StatusSerializer, **error_responses()},
        tags=["probes"],
    )
    def get(self, request: Request) -> Response:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as exc:
            raise DatabaseUnavailable() from exc
        return Response({"status": "ok"})


@csrf_exempt  # a POST to an unknown route is a 404, not a CSRF failure
def route_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Unknown routes (and Django's own 404 handler): the API's JSON error, never HTML."""
    return json_error(404, "Not found.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: a JSON 403 outside the admin (whose forms keep Django's page)."""
    if request.path.startswith("/admin/"):
        return csrf.csrf_failure(request, reason)
    return json_error(403, f"CSRF Failed: {reason}")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 400 handler (a ``SuspiciousOperation`` outside a view, such as a ``Host`` not in
    ``ALLOWED_HOSTS``): JSON, never Django's HTML page."""
    return json_error(400, "Bad request.")


def server_error(request: HttpRequest) -> HttpResponse:
    return json_error(500, "Internal server error.")
