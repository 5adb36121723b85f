"""OpenAPI pieces drf-spectacular cannot infer: the bearer scheme, the error responses with an
example of each, the response headers (``X-Request-ID`` on every answer, ``Retry-After`` on
429 and 503, ``WWW-Authenticate`` on 401) and the pagination links' examples."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

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


# What the service answers in each case (the example shown for each error response).
ERROR_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {"detail": "Invalid input.", "errors": {"exercise_id": ["This field is required."]}},
    401: {"detail": "Authentication credentials were not provided."},
    403: {"detail": "You may only read and write your own scores."},
    404: {"detail": "No such score."},
    405: {"detail": 'Method "DELETE" not allowed.'},
    409: {
        "detail": "A score for this user and exercise already exists; PATCH /scores updates "
        "it (upsert)."
    },
    413: {"detail": "The request body is larger than 1048576 bytes."},
    414: {"detail": "Request line too long."},
    415: {"detail": 'Unsupported media type "text/plain" in request.'},
    429: {"detail": "Request was throttled. Expected available in 5 seconds."},
    503: {"detail": "The users service is unavailable; retry later."},
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Responses for the given error codes, plus those every authenticated route can give."""
    every = (401, 405, 414, 429, 503)
    return {
        code: OpenApiResponse(
            ErrorSerializer,
            description=ERROR_DESCRIPTIONS[code],
            examples=[OpenApiExample(f"Error {code}", value=ERROR_EXAMPLES[code])],
        )
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


# Response headers, declared once under components and referenced by every response.
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id, as in the service's log line: the client's own "
        "X-Request-ID if it sent a usable one (up to 128 of A-Za-z0-9._:@/+=-), else a new one.",
        "schema": {"type": "string", "maxLength": 128},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "The authentication scheme to use: Bearer.",
        "required": True,
        "schema": {"type": "string"},
    },
}
HEADERS_OF_STATUS = {"401": ["WWW-Authenticate"], "429": ["Retry-After"], "503": ["Retry-After"]}


def declare_response_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every response declares ``X-Request-ID``, a 401 its
    ``WWW-Authenticate`` and a 429 or 503 its ``Retry-After``, as the service sends them."""
    result.setdefault("components", {})["headers"] = RESPONSE_HEADERS
    for item in result["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                headers = response.setdefault("headers", {})
                for name in ["X-Request-ID", *HEADERS_OF_STATUS.get(status, [])]:
                    headers[name] = {"$ref": f"#/components/headers/{name}"}
    return result


def strip_trailing_slashes(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Publish each path without its optional trailing slash, as the spec writes them."""
    result["paths"] = {path.rstrip("/") or "/": item for path, item in result["paths"].items()}
    return result
