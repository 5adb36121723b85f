"""OpenAPI pieces drf-spectacular cannot infer: the bearer scheme and the error responses."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from scores.serializers import ErrorSerializer


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
    404: "No such score, or not visible to the caller.",
    405: "Method not allowed.",
    409: "Conflict with the stored score.",
    413: "Request body over the limit.",
    415: "Unsupported media type: send application/json.",
    429: "Throttled; see Retry-After.",
    503: "The database or the users service is unavailable; see Retry-After.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Responses for the given error codes, plus those every authenticated route can give."""
    every = (401, 405, 429, 503)
    return {
        code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in sorted({*codes, *every})
    }


def write_errors(*codes: int) -> dict[int, OpenApiResponse]:
    return error_responses(400, 403, 413, 415, *codes)


USER_ID_QUERY = OpenApiParameter(
    "user_id",
    OpenApiTypes.INT,
    OpenApiParameter.QUERY,
    description="Whose score (privileged callers; defaults to the caller).",
)


def strip_trailing_slashes(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Publish each path without its optional trailing slash, as the spec writes them."""
    result["paths"] = {path.rstrip("/") or "/": item for path, item in result["paths"].items()}
    return result
