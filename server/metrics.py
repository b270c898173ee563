"""GET /metrics: the Prometheus registry, in its text format."""

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from models.errors import ErrorCode
from server.responses import error_response
from server.services import services_of


async def metrics(request: Request) -> Response:
    """Prometheus text format; behind METRICS_TOKEN when that is set."""
    token = services_of(request).settings.metrics_token
    if token is not None:
        expected = f"Bearer {token.get_secret_value()}".encode()
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return error_response(
                401,
                "GET /metrics needs its bearer token.",
                ErrorCode.UNAUTHENTICATED,
                headers={"www-authenticate": "Bearer"},
            )
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
