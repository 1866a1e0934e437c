"""Answers are never kept by shared caches: private and revalidated when they succeed, not
stored at all when they fail, and keyed by the credentials that asked."""

from __future__ import annotations

import httpx
import pytest

from flyswatter.config import Settings
from tests.support.api import Api, AuthedClient


@pytest.fixture
async def owner(api: Api) -> AuthedClient:
    owner = api.as_user("owner")
    await owner.post("/api/v1/projects", json={"key": "FLY", "name": "F"})
    await owner.post("/api/v1/projects/FLY/issues", json={"title": "first"})
    return owner


def vary_names(response: httpx.Response) -> set[str]:
    return {
        part.strip().lower()
        for value in response.headers.get_list("vary")
        for part in value.split(",")
    }


async def test_successful_answers_are_private_revalidated_and_vary_by_credentials(
    owner: AuthedClient,
) -> None:
    for response in (
        await owner.get("/api/v1/projects/FLY"),
        await owner.get("/api/v1/issues/FLY-1"),
        await owner.get("/api/v1/projects/FLY/issues"),
        await owner.post("/api/v1/projects/FLY/issues", json={"title": "second"}),
        await owner.get("/api/v1/users/me"),
    ):
        assert response.is_success, response.text
        assert response.headers["cache-control"] == "private, no-cache"
        assert "authorization" in vary_names(response)


async def test_not_modified_keeps_revalidation(owner: AuthedClient) -> None:
    first = await owner.get("/api/v1/issues/FLY-1")
    tag = first.headers["etag"]
    again = await owner.get("/api/v1/issues/FLY-1", headers={"If-None-Match": tag})
    assert again.status_code == 304
    assert again.headers["cache-control"] == "private, no-cache"
    assert "authorization" in vary_names(again)


async def test_error_answers_are_never_stored(api: Api, owner: AuthedClient) -> None:
    for response in (
        await owner.get("/api/v1/projects/NOPE"),
        await owner.post("/api/v1/projects", json={"key": "FLY", "name": "again"}),
        await owner.post("/api/v1/projects", json={}),
        await owner.patch("/api/v1/issues/FLY-1", json={"title": "x"}, headers={"If-Match": '"x"'}),
        await api.client.get("/api/v1/projects"),
        await api.client.get("/api/v1/projects", headers={"Authorization": "Bearer nope"}),
        await api.as_user("reader", scopes=["issues:read"]).get("/api/v1/projects"),
    ):
        assert response.status_code >= 400
        assert response.headers["cache-control"] == "no-store"
        assert "authorization" in vary_names(response)


async def test_vary_keeps_what_cors_adds(settings: Settings) -> None:
    from flyswatter.app import create_app

    app = create_app(settings.model_copy(update={"cors_origins": ["https://tracker.example"]}))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        response = await client.get("/healthz", headers={"Origin": "https://tracker.example"})
    assert {"origin", "authorization"} <= vary_names(response)
