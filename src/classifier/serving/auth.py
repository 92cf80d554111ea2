"""Bearer-token authentication of the predict routes.

The service does not start without a token unless CLASSIFIER_ALLOW_UNAUTHENTICATED says an
open endpoint is intended (settings.py). Two tokens may be valid at once (CLASSIFIER_API_TOKEN
and CLASSIFIER_API_TOKEN_SECONDARY) so a token can be rotated without refusing any client
(docs/environments.md, "The API token"). Probes, metrics and the model card stay open: the
kubelet and Prometheus need them.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Request

from classifier.serving.errors import Unauthorized
from classifier.serving.settings import Settings
from classifier.serving.state import Service

log = logging.getLogger("classifier.serving")


def token_matches(presented: bytes, tokens: tuple[bytes, ...]) -> bool:
    """Constant-time: every accepted token is compared, whichever matches (no short cut)."""
    matches = [hmac.compare_digest(presented, token) for token in tokens]
    return any(matches)


async def require_token(request: Request, service: Service) -> None:
    """With tokens configured, the route needs `Authorization: Bearer <token>`."""
    tokens = service.settings.api_tokens
    if not tokens:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not token_matches(presented.strip().encode(), tokens):
        raise Unauthorized("invalid bearer token")


def log_mode(settings: Settings) -> None:
    """Say at start-up, once, whether predictions need a token."""
    tokens = len(settings.api_tokens)
    if tokens == 0:
        log.warning(
            "authentication OFF: predict routes are open to anyone who can reach the port "
            "(CLASSIFIER_ALLOW_UNAUTHENTICATED=true)",
            extra={"auth": "none"},
        )
    else:
        log.info(
            "authentication on: predict routes need a bearer token"
            + (" (2 tokens accepted: rotation in progress)" if tokens == 2 else ""),
            extra={"auth": "bearer", "tokens": tokens},
        )
