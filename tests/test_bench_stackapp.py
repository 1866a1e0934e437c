"""The middleware-stack benchmark compares what it claims to compare."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bench.stackapp import PIECES, PROBE_PATH, build
from flyswatter.config import Settings
from flyswatter.db import SessionMiddleware
from flyswatter.http.body_limit import BodySizeLimitMiddleware
from tests.support.identity import TokenFactory


def middleware_classes(without: frozenset[str], settings: Settings) -> list[Any]:
    app = build(without, log=False, **settings.model_dump())
    return [middleware.cls for middleware in app.user_middleware]


def test_bare_app_keeps_only_what_is_outside_the_stack(base_settings: Settings) -> None:
    assert middleware_classes(frozenset(PIECES), base_settings) == [
        BodySizeLimitMiddleware,
        SessionMiddleware,
    ]


@pytest.mark.parametrize("piece", list(PIECES))
def test_each_variant_removes_exactly_its_piece(piece: str, base_settings: Settings) -> None:
    full = middleware_classes(frozenset(), base_settings)
    assert middleware_classes(frozenset({piece}), base_settings) == [
        cls for cls in full if cls is not PIECES[piece]
    ]


def test_removing_the_limiter_switches_its_hit_off(base_settings: Settings) -> None:
    overrides = {**base_settings.model_dump(), "rate_limit_enabled": True}
    assert build(frozenset(), log=False, **overrides).settings.rate_limit_enabled
    assert not build(frozenset({"limiter"}), log=False, **overrides).settings.rate_limit_enabled


@pytest.mark.parametrize(("without", "stacked"), [(frozenset(), True), (frozenset(PIECES), False)])
async def test_probe_authenticates_through_the_stack_without_a_query(
    settings: Settings, tokens: TokenFactory, without: frozenset[str], stacked: bool
) -> None:
    overrides: dict[str, Any] = {**settings.model_dump(), "rate_limit_enabled": True}
    app = build(without, log=False, **overrides)
    headers = {"Authorization": f"Bearer {tokens.user_token('prober')}"}
    statements: list[str] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            assert (await client.get(PROBE_PATH)).status_code == 401
            assert (await client.get(PROBE_PATH, headers=headers)).status_code == 200  # mirrors
            sa.event.listen(
                app.services.engine.sync_engine,
                "before_cursor_execute",
                lambda *args: statements.append(args[2]),
            )
            response = await client.get(PROBE_PATH, headers=headers)
    assert response.status_code == 200
    assert statements == []
    assert ("x-request-id" in response.headers) is stacked
    assert ("x-ratelimit-limit" in response.headers) is stacked
