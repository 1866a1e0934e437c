"""The webhook receiver both senders post to (``bench.webhooks``): a Starlette app under
uvicorn in a process of its own, so that its work is no sender's CPU.

Each webhook posts to ``/hook/{name}``. The receiver verifies each delivery's Standard
Webhooks signature with that webhook's secret (as a subscriber would), notes when it arrived,
and answers 200. ``POST /reset`` with ``{"secrets": {name: secret, ...}}`` forgets what
arrived and sets the secrets; ``GET /stats`` says how many arrived (distinct deliveries too:
webhook and ``webhook-id``), how many failed verification, and the first and last arrival
times (``time.time()``).
"""

from __future__ import annotations

import time

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_verifiers: dict[str, Webhook] = {}
_arrivals: list[float] = []
_ids: set[tuple[str, str]] = set()
_rejected: list[int] = []


async def hook(request: Request) -> Response:
    body = await request.body()
    name = request.path_params["name"]
    try:
        _verifiers[name].verify(body, dict(request.headers))
    except (KeyError, WebhookVerificationError):
        _rejected.append(1)
        return JSONResponse({"verified": False}, status_code=400)
    _arrivals.append(time.time())
    _ids.add((name, request.headers["webhook-id"]))
    return JSONResponse({"verified": True})


async def stats(request: Request) -> Response:
    return JSONResponse(
        {
            "count": len(_arrivals),
            "distinct": len(_ids),
            "rejected": len(_rejected),
            "first": min(_arrivals, default=None),
            "last": max(_arrivals, default=None),
        }
    )


async def reset(request: Request) -> Response:
    secrets = (await request.json())["secrets"]
    _verifiers.clear()
    _verifiers.update({name: Webhook(secret) for name, secret in secrets.items()})
    _arrivals.clear()
    _ids.clear()
    _rejected.clear()
    return JSONResponse({"count": 0})


app = Starlette(
    routes=[
        Route("/hook/{name}", hook, methods=["POST"]),
        Route("/stats", stats),
        Route("/reset", reset, methods=["POST"]),
    ]
)
