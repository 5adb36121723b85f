"""HTTP endpoints. Views declare; the rules live in services, selectors and permissions."""

from __future__ import annotations

from typing import Any

from django.db import connection, router
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views import csrf
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from scores.authentication import Caller, caller_of
from scores.csv_export import csv_chunks
from scores.exceptions import Conflict, DatabaseUnavailable, json_error
from scores.filters import ExerciseStatsFilter, ScoreFilter
from scores.models import Score
from scores.negotiation import FirstRendererNegotiation
from scores.pagination import (
    AttemptCursorPagination,
    ExerciseCursorPagination,
    IdCursorPagination,
)
from scores.permissions import ensure_may_write, ensure_privileged, target_user_id
from scores.renderers import ORJSONRenderer
from scores.schema import (
    EXERCISE_ID_PATH,
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
    score_for_caller,
    score_of_user,
    scores_for_export,
    scores_visible_to,
    user_summary,
    with_rates,
)
from scores.serializers import (
    AttemptSerializer,
    BulkResultSerializer,
    BulkSerializer,
    ExerciseIdSerializer,
    ExerciseStatsSerializer,
    IdField,
    PingSerializer,
    ScoreCorrectSerializer,
    ScoreSerializer,
    ScoreUpdateSerializer,
    ScoreWriteSerializer,
    StatusSerializer,
    SummarySerializer,
    parse_bulk,
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


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def path_int(value: str) -> int | str:
    """A path segment as an int when it is one, else unchanged (for the field's error)."""
    return int(value) if value.isascii() and value.isdigit() else value


def query_user_id(request: Request) -> int | None:
    raw = request.query_params.get("user_id")
    if raw is None:
        return None
    try:
        return IdField().to_internal_value(path_int(raw))
    except serializers.ValidationError as exc:
        raise exceptions.ValidationError({"user_id": exc.detail}) from exc


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
        parameters=[SCORE_ID_PATH],
        responses={204: OpenApiResponse(description="Deleted."), **error_responses(403, 404)},
    ),
)
class ScoreViewSet(viewsets.GenericViewSet):
    """Scores: one current result per (user, exercise)."""

    serializer_class = ScoreSerializer
    pagination_class = IdCursorPagination
    filterset_class = ScoreFilter
    lookup_value_regex = "[0-9]+"

    def get_queryset(self) -> Any:
        if self.action == "stats":
            return exercise_stats()
        if getattr(self, "swagger_fake_view", False):  # schema generation: no caller
            return Score.objects.none()
        return scores_visible_to(self.caller)

    def get_object(self) -> Any:
        """The score of a ``{pk}`` route. DRF's OPTIONS asks for it before describing PUT; the
        ``user/{exercise_id}`` upsert has none to give (its PUT may create the score)."""
        if self.lookup_field not in self.kwargs:
            return None
        return super().get_object()

    @property
    def caller(self) -> Caller:
        return caller_of(self.request)

    def _page(self, rows: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(rows))
        return self.get_paginated_response(page)

    def _visible(self, pk: str) -> ScoreRow:
        score = score_for_caller(caller=self.caller, score_id=int(pk))
        if score is None:
            raise exceptions.NotFound("No such score.")
        return score

    def list(self, request: Request) -> Response:
        return self._page(self.get_queryset())

    def _write(
        self, data: dict[str, Any], user_id: int, exercise_id: int, mode: WriteMode
    ) -> Response:
        """Apply a validated write body through the write service; 201 when it created the
        score (also when replayed), else 200."""
        write = Write(
            user_id=user_id,
            exercise_id=exercise_id,
            correct=data["correct"],
            attempt_id=data.get("attempt_id"),
            attempted_at=data.get("attempted_at"),
        )
        try:
            result = score_write(write=write, recorded_by=self.caller.name, mode=mode)
        except ScoreExists as exc:
            raise Conflict(
                "A score for this user and exercise already exists; "
                "PATCH /scores updates it (upsert)."
            ) from exc
        except ScoreNotFound as exc:
            raise exceptions.NotFound("No such score.") from exc
        except AttemptConflict as exc:
            raise attempt_conflict(exc) from exc
        return score_response(result.score, result.created)

    def create(self, request: Request) -> Response:
        caller = self.caller
        ensure_may_write(caller)
        data = validated(ScoreWriteSerializer, request.data)
        user_id = target_user_id(caller, data.get("user_id"))
        return self._write(data, user_id, data["exercise_id"], WriteMode.CREATE)

    @extend_schema(
        operation_id="scores_upsert",
        summary="Create or update a score (upsert)",
        request=ScoreWriteSerializer,
        responses={200: ScoreSerializer, 201: ScoreSerializer, **write_errors(404)},
    )
    def upsert(self, request: Request) -> Response:
        caller = self.caller
        ensure_may_write(caller)
        data = validated(ScoreWriteSerializer, request.data)
        user_id = target_user_id(caller, data.get("user_id"))
        return self._write(data, user_id, data["exercise_id"], WriteMode.UPSERT)

    def retrieve(self, request: Request, pk: str) -> Response:
        return score_response(self._visible(pk))

    def update(self, request: Request, pk: str) -> Response:
        caller = self.caller
        ensure_may_write(caller)
        score = self._visible(pk)
        data = validated(ScoreUpdateSerializer, request.data)
        changed: dict[str, list[str]] = {
            field: ["Cannot be changed: it identifies the score."]
            for field in ("user_id", "exercise_id")
            if field in data and data[field] != score[field]
        }
        if changed:
            raise exceptions.ValidationError(changed)
        return self._write(data, score["user_id"], score["exercise_id"], WriteMode.UPDATE)

    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk)

    def destroy(self, request: Request, pk: str) -> Response:
        score = self._visible(pk)
        ensure_privileged(self.caller)
        if not score_delete(score_id=score["id"]):
            raise exceptions.NotFound("No such score.")
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _own_user_id(self, request: Request) -> int:
        """The user a /scores/user request is about: ?user_id= if given (visibility still
        applies: a non-privileged caller sees nothing of others), else the caller."""
        requested = query_user_id(request)
        return target_user_id(self.caller, None) if requested is None else requested

    @extend_schema(
        summary="The caller's own scores",
        parameters=[USER_ID_QUERY],
        responses={200: ScoreSerializer(many=True), **error_responses(400, 403)},
    )
    @action(detail=False, methods=["get"], url_path="user")
    def mine(self, request: Request) -> Response:
        user_id = self._own_user_id(request)
        return self._page(scores_visible_to(self.caller).filter(user_id=user_id))

    @extend_schema(
        methods=["GET"],
        summary="The caller's score for one exercise",
        parameters=[EXERCISE_ID_PATH, USER_ID_QUERY],
        responses={200: ScoreSerializer, **error_responses(400, 403, 404)},
    )
    @extend_schema(
        methods=["PUT"],
        summary="Create or update the caller's score for one exercise (upsert)",
        parameters=[EXERCISE_ID_PATH],
        request=ScoreCorrectSerializer,
        responses={200: ScoreSerializer, 201: ScoreSerializer, **write_errors(404)},
    )
    @action(detail=False, methods=["get", "put"], url_path=r"user/(?P<exercise_id>[^/]+)")
    def mine_for_exercise(self, request: Request, exercise_id: str) -> Response:
        if request.method == "PUT":
            exercise = validated(ExerciseIdSerializer, {"exercise_id": path_int(exercise_id)})
            caller = self.caller
            ensure_may_write(caller)
            data = validated(ScoreCorrectSerializer, request.data)
            user_id = target_user_id(caller, data.get("user_id", query_user_id(request)))
            return self._write(data, user_id, exercise["exercise_id"], WriteMode.UPSERT)
        return score_response(self._own_score(request, exercise_id))

    def _own_score(self, request: Request, exercise_id: str) -> ScoreRow:
        """The score of /scores/user/{exercise_id}: the caller's, or ?user_id='s when privileged.

        Raises:
            NotFound: no such score, or not visible to the caller.
        """
        exercise = validated(ExerciseIdSerializer, {"exercise_id": path_int(exercise_id)})
        caller = self.caller
        user_id = self._own_user_id(request)
        score = None
        if caller.privileged or user_id == caller.user_id:
            score = score_of_user(user_id=user_id, exercise_id=exercise["exercise_id"])
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
        score = self._visible(pk)
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
        caller = self.caller
        user_id = self._own_user_id(request)
        if user_id != caller.user_id and not caller.privileged:
            raise exceptions.PermissionDenied("You may only read and write your own scores.")
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
        summary="Upsert up to 1000 scores in one transaction (privileged callers)",
        request=BulkSerializer,
        responses={200: BulkResultSerializer, **write_errors()},
    )
    @action(detail=False, methods=["post"], url_path="bulk")
    def bulk(self, request: Request) -> Response:
        caller = self.caller
        ensure_privileged(caller)
        try:
            result = scores_upsert_many(writes=parse_bulk(request.data), recorded_by=caller.name)
        except AttemptConflict as exc:
            raise attempt_conflict(exc) from exc
        return Response({"created": result.created, "updated": result.updated})

    @extend_schema(
        summary="The list's scores as CSV, streamed (privileged callers)",
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="Header id,user_id,exercise_id,correct,created_at,updated_at.",
            ),
            **error_responses(400, 403),
        },
    )
    @action(
        detail=False,
        methods=["get"],
        url_path=r"export\.csv",
        url_name="export",
        content_negotiation_class=FirstRendererNegotiation,
    )
    def export(self, request: Request) -> StreamingHttpResponse:
        ensure_privileged(self.caller)
        # The database is chosen now, while a client's recent write still pins it to the
        # primary; the rows are read later, as the response streams.
        queryset = self.filter_queryset(self.get_queryset())
        rows = scores_for_export(queryset.using(router.db_for_read(Score)))
        response = StreamingHttpResponse(csv_chunks(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="scores.csv"'
        return response


class PublicView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]


class JSONErrorsMixin:
    """For views that render YAML or HTML (the schema, the docs): their errors (405, 429) and
    their OPTIONS description are JSON like the rest of the API, not a page (nor, for OPTIONS
    of the docs, a 500 from a template given the wrong context)."""

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        if isinstance(response, Response) and (response.exception or request.method == "OPTIONS"):
            response.accepted_renderer = ORJSONRenderer()
            response.accepted_media_type = ORJSONRenderer.media_type
        return response


class SchemaView(JSONErrorsMixin, SpectacularAPIView):
    """The OpenAPI schema."""


class SwaggerView(JSONErrorsMixin, SpectacularSwaggerView):
    """Swagger UI, with its assets served locally."""


class RedocView(JSONErrorsMixin, SpectacularRedocView):
    """Redoc, with its assets served locally."""


class PingView(PublicView):
    """The old service's health check."""

    @extend_schema(summary="Ping (the old health check)", responses={200: PingSerializer})
    def get(self, request: Request) -> Response:
        return Response({"status": "success", "message": "pong!"})


class HealthView(PublicView):
    throttle_classes: list[Any] = []

    @extend_schema(summary="Liveness: the process answers", responses={200: StatusSerializer})
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyView(PublicView):
    throttle_classes: list[Any] = []

    @extend_schema(
        summary="Readiness: the database answers",
        responses={200: StatusSerializer, **error_responses()},
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
