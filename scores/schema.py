"""OpenAPI pieces drf-spectacular cannot infer: the bearer scheme and the error responses."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from scores.models import MAX_ID
from scores.serializers import ErrorSerializer, ScoreSerializer
from scores.validation import REASON_MAX


class UsersServiceBearerScheme(OpenApiAuthenticationExtension):
    target_class = "scores.authentication.UsersServiceAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A platform user's token, verified with the users service.",
        }


ERROR_DESCRIPTIONS = {
    400: "Invalid input or malformed JSON; `errors` names the fields.",
    401: "Missing, malformed or rejected credentials.",
    403: "Authenticated but not allowed.",
    404: "No such score, or not visible to the caller (for a write: a retry of an attempt "
    "whose score has been deleted since).",
    405: "Method not allowed.",
    409: "Conflict with the stored score, or an attempt_id already recorded with other content.",
    413: "Request body over the limit.",
    414: "Request line (method, path and query string) over 4094 bytes.",
    415: "Unsupported media type: send application/json.",
    429: "Throttled; see Retry-After.",
    503: "The database or the users service is unavailable; see Retry-After.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Responses for the given error codes, plus those every authenticated route can give."""
    every = (401, 405, 414, 429, 503)
    return {
        code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in sorted({*codes, *every})
    }


def write_errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Every write can be a 409: its attempt_id recorded before with other content."""
    return error_responses(400, 403, 409, 413, 415, *codes)


def replayed(status_code: int) -> OpenApiResponse:
    """The other success status of a write: a retry (same attempt_id and content) is answered
    as the first write was, whichever route that went through."""
    first = "created the score" if status_code == 201 else "updated an existing score"
    return OpenApiResponse(
        ScoreSerializer,
        description=f"A retry of an attempt whose first write {first}: the first answer again.",
    )


ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}

USER_ID_QUERY = OpenApiParameter(
    "user_id",
    ID_SCHEMA,
    OpenApiParameter.QUERY,
    description="Whose score (privileged callers; defaults to the caller).",
)
EXERCISE_ID_PATH = OpenApiParameter("exercise_id", ID_SCHEMA, OpenApiParameter.PATH)
REASON_QUERY = OpenApiParameter(
    "reason",
    {"type": "string", "maxLength": REASON_MAX},
    OpenApiParameter.QUERY,
    description=f"Why (at most {REASON_MAX} characters, no control characters), kept in the "
    "audit log.",
)
SCORE_ID_PATH = OpenApiParameter(
    "id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH, description="The score's id."
)


def strip_trailing_slashes(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Publish each path without its optional trailing slash, as the spec writes them."""
    result["paths"] = {path.rstrip("/") or "/": item for path, item in result["paths"].items()}
    return result
