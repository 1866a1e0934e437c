"""Cross-cutting behaviour of every request: ids, problem+json errors, health, OpenAPI."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy.exc import ProgrammingError

from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.support.api import Api


class TestRequestId:
    async def test_generated_when_absent(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz")
        assert len(response.headers["X-Request-ID"]) == 32

    async def test_taken_from_the_request_when_well_formed(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz", headers={"X-Request-ID": "req-42.abc"})
        assert response.headers["X-Request-ID"] == "req-42.abc"

    async def test_unsafe_incoming_id_is_replaced(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz", headers={"X-Request-ID": "x" * 200})
        assert response.headers["X-Request-ID"] != "x" * 200
        response = await client.get("/healthz", headers={"X-Request-ID": "a b<script>"})
        assert "<" not in response.headers["X-Request-ID"]

    async def test_errors_carry_the_request_id_in_body_and_header(self, api: Api) -> None:
        response = await api.client.get("/api/v1/projects", headers={"X-Request-ID": "trace-1"})
        assert response.status_code == 401
        assert response.json()["request_id"] == "trace-1"
        assert response.headers["X-Request-ID"] == "trace-1"


class TestProblemDetails:
    async def test_unknown_route_is_a_problem_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/nothing-here")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 404
        assert body["type"].startswith("urn:flyswatter:problem:")
        assert body["instance"] == "/api/v1/nothing-here"

    async def test_wrong_method_is_a_problem_405(self, client: httpx.AsyncClient) -> None:
        response = await client.put("/healthz")
        assert response.status_code == 405
        assert response.headers["content-type"] == "application/problem+json"
        assert "GET" in response.headers["Allow"]

    async def test_malformed_json_is_a_problem_422(self, api: Api) -> None:
        response = await api.as_user("alice").post(
            "/api/v1/projects",
            content=b'{"key": "FLY", "name": ',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"]

    async def test_unexpected_error_is_a_bare_500_without_internals(
        self, settings: Settings, caplog: pytest.LogCaptureFixture
    ) -> None:
        app = create_app(settings)
        boom = APIRouter()

        # Built at run time: the log keeps source lines of frames, never exception messages.
        password, token = "hunter" + "2", "eyJhbG" + "ciOi"

        @boom.get("/boom")
        async def explode() -> None:
            raise ProgrammingError(f"SELECT * FROM vault WHERE pw = '{password}'", {}, Exception())

        @boom.get("/crash")
        async def crash() -> None:
            raise RuntimeError(f"token {token} leaked?")

        app.include_router(boom)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            for path in ("/boom", "/crash"):
                response = await client.get(path)
                assert response.status_code == 500
                assert response.headers["content-type"] == "application/problem+json"
                assert "hunter2" not in response.text
                assert "eyJhbGciOi" not in response.text
                assert response.json()["detail"] == "unexpected error"
        assert "hunter2" not in caplog.text
        assert "eyJhbGciOi" not in caplog.text


class TestHealth:
    async def test_healthz_and_readyz_when_all_is_well(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}

    async def test_readyz_is_503_when_the_database_is_unreachable(self, settings: Settings) -> None:
        unreachable = settings.model_copy(
            update={
                "database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none",
                "database_timeout_seconds": 1.0,
            }
        )
        app = create_app(unreachable)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            assert (await client.get("/healthz")).status_code == 200
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert "127.0.0.1:1" not in response.text


class TestOpenApi:
    async def test_docs_and_schema_are_served(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/docs")).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert "/api/v1/projects" in schema["paths"]

    async def test_routes_declare_their_scopes(self, client: httpx.AsyncClient) -> None:
        schema = (await client.get("/openapi.json")).json()
        create = schema["paths"]["/api/v1/projects"]["post"]
        # Keycloak's flows with the route's scopes, or a pasted token (the bearerToken field).
        assert create["security"] == [{"keycloak": ["projects:write"]}, {"bearerToken": []}]
        listing = schema["paths"]["/api/v1/projects"]["get"]
        assert listing["security"] == [{"keycloak": ["projects:read"]}, {"bearerToken": []}]


def test_added_headers_never_override_or_repeat_what_the_response_set() -> None:
    from flyswatter.http.headers import add_missing_headers

    message = {
        "type": "http.response.start",
        "status": 429,
        "headers": [(b"Cache-Control", b"no-store"), (b"x-ratelimit-limit", b"5")],
    }
    add_missing_headers(
        message,
        ((b"cache-control", b"private, no-cache"), (b"x-ratelimit-limit", b"9"), (b"x-a", b"1")),
    )
    assert message["headers"] == [
        (b"Cache-Control", b"no-store"),
        (b"x-ratelimit-limit", b"5"),
        (b"x-a", b"1"),
    ]
