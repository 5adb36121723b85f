"""``/privacy/users/{user_id}``: one user's personal data, exported (``GET``, the user themself
or a privileged caller) and erased (``DELETE``, privileged callers). The rules and the work are
``scores.privacy``'s; visibility is the scores' own (``scores.permissions.may_see_user``)."""

from __future__ import annotations

from dataclasses import asdict

from django.db import router
from django.http import StreamingHttpResponse
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from scores.audit import actor_of
from scores.callers import Caller, caller_of
from scores.models import Score
from scores.permissions import IsScoresCaller, may_see_user
from scores.privacy import user_erase, user_export
from scores.schema import ID_SCHEMA, REASON_QUERY, error_responses
from scores.serializers import ErasureSerializer, ErrorSerializer, PrivacyExportSerializer
from scores.validation import InvalidValue, parse_path_id, parse_reason_text
from scores.views import query_value

USER_ID_PATH = OpenApiParameter(
    "user_id", ID_SCHEMA, OpenApiParameter.PATH, description="The user whose data it is."
)
NOT_VISIBLE = OpenApiResponse(
    ErrorSerializer,
    description="The caller is neither this user nor privileged (whether or not anything is "
    "stored about the user).",
    examples=[OpenApiExample("Error 404", value={"detail": "Not found."})],
)
ERASE_PRIVILEGED = "Only privileged callers may erase a user's data."


class PrivacyUserView(APIView):
    """One user's personal data (spec: "Personal data and audit")."""

    permission_classes = [IsScoresCaller]

    def _user_id(self, request: Request, segment: str) -> tuple[Caller, int]:
        """The caller and the user of the path, if the caller may see that user's data.

        Raises:
            ValidationError: the path's user id is not one (naming ``user_id``).
            NotFound: the caller is neither that user nor privileged.
        """
        try:
            user_id = parse_path_id(segment)
        except InvalidValue as exc:
            raise exceptions.ValidationError({"user_id": [str(exc)]}) from exc
        caller = caller_of(request)
        if not may_see_user(caller, user_id):
            raise exceptions.NotFound()
        return caller, user_id

    @extend_schema(
        operation_id="privacy_export",
        summary="Everything stored about one user, streamed (the user or privileged callers)",
        description="Their scores as `GET /scores/{id}` shows them and their whole attempt log "
        "(with each attempt's `reason`, `recorded_by` and `applied`), in id order. Streamed: "
        "the answer is sent as it is read.",
        parameters=[USER_ID_PATH],
        responses={200: PrivacyExportSerializer, **error_responses(400), 404: NOT_VISIBLE},
        tags=["privacy"],
    )
    def get(self, request: Request, user_id: str) -> StreamingHttpResponse:
        _, user = self._user_id(request, user_id)
        # The database is chosen now, while a client's recent write still pins it to the
        # primary; the rows are read as the answer streams.
        rows = user_export(user_id=user, using=router.db_for_read(Score))
        return StreamingHttpResponse(rows, content_type="application/json")

    @extend_schema(
        operation_id="privacy_erase",
        summary="Erase everything stored about one user (privileged callers)",
        description="In one transaction: the user's scores (each a `score.deleted` event; the "
        "statistics follow), their whole attempt log, their earlier events still kept, and the "
        "admin's change history of their scores; recorded in the audit log with the caller "
        "and `reason`. A user with nothing stored is answered with zeros. A write of the user "
        "racing with the erasure is erased or kept whole; writes after it are kept.",
        parameters=[USER_ID_PATH, REASON_QUERY],
        responses={200: ErasureSerializer, **error_responses(400, 403), 404: NOT_VISIBLE},
        tags=["privacy"],
    )
    def delete(self, request: Request, user_id: str) -> Response:
        caller, user = self._user_id(request, user_id)
        if not caller.privileged:
            raise exceptions.PermissionDenied(ERASE_PRIVILEGED)
        reason = query_value(request, "reason", parse_reason_text, None)
        return Response(asdict(user_erase(user_id=user, actor=actor_of(caller), reason=reason)))
