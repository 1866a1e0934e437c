"""Page cursors are signed: a cursor the service did not issue, or issued for another list,
project or sort order, is a 400 problem before any of its values is used; so is a genuine
signature over contents no page could have produced."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from pydantic import SecretStr

from flyswatter.config import Settings
from flyswatter.http.pagination import cursor_key, signed_cursor
from tests.support.api import Api, AuthedClient

FLY_ISSUES = "/api/v1/projects/FLY/issues"


@pytest.fixture
async def owner(api: Api) -> AuthedClient:
    owner = api.as_user("owner")
    for key in ("FLY", "OTH"):
        await owner.post("/api/v1/projects", json={"key": key, "name": key})
        for number in range(3):
            await owner.post(f"/api/v1/projects/{key}/issues", json={"title": f"{key} {number}"})
            await owner.post(
                f"/api/v1/projects/{key}/labels", json={"name": f"l{number}", "color": "#000000"}
            )
    await owner.post("/api/v1/issues/FLY-1/comments", json={"body": "a"})
    await owner.post("/api/v1/issues/FLY-1/comments", json={"body": "b"})
    return owner


async def next_cursor(client: AuthedClient, path: str, **params: Any) -> str:
    response = await client.get(path, params={"limit": 1, **params})
    assert response.status_code == 200, response.text
    cursor = response.json()["next_cursor"]
    assert cursor is not None
    return str(cursor)


def assert_bad_cursor(response: Any) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith("invalid cursor")


async def test_cursors_are_opaque_url_safe_and_walk_the_list(owner: AuthedClient) -> None:
    cursor = await next_cursor(owner, FLY_ISSUES)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", cursor)
    second = await owner.get(FLY_ISSUES, params={"limit": 1, "cursor": cursor})
    assert second.status_code == 200
    assert second.json()["items"][0]["key"] == "FLY-2"


@pytest.mark.parametrize(
    "forge",
    [
        lambda cursor: cursor.split(".")[0],  # no signature
        lambda cursor: cursor.split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAA",
        lambda cursor: "A" + cursor[1:] if cursor[0] != "A" else "B" + cursor[1:],
        lambda cursor: cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"),
        lambda cursor: cursor + "A",
        lambda cursor: cursor.replace(".", ".."),
        lambda cursor: (
            base64.urlsafe_b64encode(b'["-updated_at","2020-01-01T00:00:00+00:00",1]')
            .decode()
            .rstrip("=")
        ),
    ],
    ids=[
        "unsigned",
        "zero signature",
        "payload changed",
        "signature changed",
        "longer",
        "two dots",
        "hand-written",
    ],
)
async def test_a_cursor_the_service_did_not_issue_is_a_400(owner: AuthedClient, forge: Any) -> None:
    cursor = forge(await next_cursor(owner, FLY_ISSUES))
    assert_bad_cursor(await owner.get(FLY_ISSUES, params={"cursor": cursor}))


async def test_a_cursor_for_another_project_is_a_400(owner: AuthedClient) -> None:
    cursor = await next_cursor(owner, FLY_ISSUES)
    assert_bad_cursor(await owner.get("/api/v1/projects/OTH/issues", params={"cursor": cursor}))


async def test_a_cursor_for_another_list_is_a_400(owner: AuthedClient) -> None:
    labels = await next_cursor(owner, "/api/v1/projects/FLY/labels")
    comments = await next_cursor(owner, "/api/v1/issues/FLY-1/comments")
    for path, cursor in [
        ("/api/v1/projects/FLY/members", labels),
        ("/api/v1/projects/OTH/labels", labels),
        ("/api/v1/issues/FLY-1/activity", comments),
        ("/api/v1/issues/FLY-2/comments", comments),
        ("/api/v1/projects", labels),
    ]:
        assert_bad_cursor(await owner.get(path, params={"cursor": cursor}))


async def test_a_cursor_for_another_sort_order_is_a_400(owner: AuthedClient) -> None:
    cursor = await next_cursor(owner, FLY_ISSUES, sort="-created_at")
    for sort in ("-updated_at", "created_at", "priority"):
        response = await owner.get(FLY_ISSUES, params={"cursor": cursor, "sort": sort})
        assert_bad_cursor(response)


TIME = "2026-01-01T00:00:00+00:00"
LABELS = "/api/v1/projects/FLY/labels"
# What a client holding the key could sign: (list, sort parameter, the cursor's document).
SIGNED_BUT_MALFORMED: dict[str, tuple[str, str | None, Any]] = {
    "an object": (FLY_ISSUES, None, {"sort": "-updated_at"}),
    "a string": (FLY_ISSUES, None, "-updated_at"),
    "nested": (FLY_ISSUES, None, json.loads("[" * 150 + "]" * 150)),
    "no sort": (FLY_ISSUES, None, [None, TIME, 1]),
    "too few values": (FLY_ISSUES, None, ["-updated_at", TIME]),
    "too many values": (FLY_ISSUES, None, ["-updated_at", TIME, 1, 2]),
    "null timestamp": (FLY_ISSUES, None, ["-updated_at", None, 1]),
    "null id": (FLY_ISSUES, None, ["-updated_at", TIME, None]),
    "timestamp a number": (FLY_ISSUES, None, ["-updated_at", 1_700_000_000, 1]),
    "timestamp not a time": (FLY_ISSUES, None, ["-updated_at", "yesterday", 1]),
    "timestamp without offset": (FLY_ISSUES, None, ["-updated_at", "2026-01-01T00:00:00", 1]),
    "timestamp past UTC's end": (FLY_ISSUES, None, ["-updated_at", "9999-12-31T23:59-23:59", 1]),
    "timestamp before UTC's start": (
        FLY_ISSUES,
        "created_at",
        ["created_at", "0001-01-01T00:00:00+23:59", 1],
    ),
    "id a string": (FLY_ISSUES, None, ["-updated_at", TIME, "1"]),
    "id a float": (FLY_ISSUES, None, ["-updated_at", TIME, 1.5]),
    "id a boolean": (FLY_ISSUES, None, ["-updated_at", TIME, True]),
    "id negative": (FLY_ISSUES, None, ["-updated_at", TIME, -1]),
    "id beyond 32 bits": (FLY_ISSUES, None, ["-updated_at", TIME, 2**31]),
    "id beyond 64 bits": (FLY_ISSUES, None, ["-updated_at", TIME, 10**30]),
    "rank beyond 32 bits": (FLY_ISSUES, "priority", ["priority", 2**40, 1]),
    "name with NUL": (LABELS, None, ["name", "a\x00b"]),
    "name with a lone surrogate": (LABELS, None, ["name", "a\ud800"]),
    "name a list": (LABELS, None, ["name", ["a"]]),
    "name longer than any name": (LABELS, None, ["name", "a" * 300]),
    "key a number": ("/api/v1/projects", None, ["key", 5]),
}


@pytest.mark.parametrize("case", sorted(SIGNED_BUT_MALFORMED))
async def test_a_signed_cursor_with_impossible_contents_is_a_400(
    owner: AuthedClient, settings: Settings, case: str
) -> None:
    path, sort, document = SIGNED_BUT_MALFORMED[case]
    cursor = signed_cursor(cursor_key(settings), path, document)
    params = {"cursor": cursor} | ({"sort": sort} if sort else {})
    assert_bad_cursor(await owner.get(path, params=params))


async def test_a_configured_secret_signs_cursors(settings: Settings) -> None:
    unset = cursor_key(settings)
    configured = Settings(**{**settings.model_dump(), "cursor_secret": "rotate-me"})
    assert cursor_key(configured) != unset
    again = Settings(**{**settings.model_dump(), "cursor_secret": "rotate-me"})
    assert cursor_key(again) == cursor_key(configured)


def test_without_a_secret_the_key_owes_nothing_to_the_database_url(settings: Settings) -> None:
    # A key derived from the URL would be forgeable by anyone who knows a password-less URL.
    unset = settings.model_copy(update={"cursor_secret": None})
    elsewhere = unset.model_copy(update={"database_url": "postgresql://other@db.test/x"})
    assert cursor_key(unset) == cursor_key(elsewhere)
    as_secret = unset.model_copy(update={"cursor_secret": SecretStr(unset.database_url)})
    assert cursor_key(unset) != cursor_key(as_secret)
