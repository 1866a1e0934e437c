"""Every header value the service emits comes from one builder: names in any script travel
through ``Location``, ``Link`` and ``Content-Disposition`` percent-encoded and come back
intact, no value can fail to encode or carry a line break, and the ``Location`` of every
create and the ``Link`` of every list lead where they say."""

from __future__ import annotations

import string
from urllib.parse import unquote, urlsplit

import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import URL

from flyswatter.http.headers import (
    api_path,
    bearer_challenge,
    content_disposition,
    entity_tag,
    next_link,
)
from tests.support.api import Api, AuthedClient, Team, make_team, walk_pages

NAMES = {
    "emoji": "🐞 bug",
    "cyrillic": "Ошибка",
    "cjk": "缺陷 バグ",
    "rtl": "באג خطأ",
    "reserved": "a?c#d%41&e=f;g+h",
}
HOSTILE = "x\r\nSet-Cookie: stolen=1"
# RFC 8187 3.2.1: what an ext-value holds unencoded.
ATTR_CHARS = string.ascii_letters + string.digits + "!#$&+-.^_`|~"


def is_header_safe(value: str) -> bool:
    """Printable ASCII: encodes as latin-1 and holds no CR, LF or other control."""
    return value.isascii() and value.isprintable()


def last_segment(location: str) -> str:
    return unquote(urlsplit(location).path.rsplit("/", 1)[1])


def filename_of(disposition: str) -> str:
    """The name a user agent saves as: ``filename*`` (RFC 8187), which RFC 6266 4.3 prefers
    to the fallback (the standard library's email parser keeps the fallback instead)."""
    parameters = dict(
        part.strip().split("=", 1) for part in disposition.split(";")[1:] if "=" in part
    )
    charset, _language, encoded = parameters["filename*"].split("'", 2)
    assert charset == "UTF-8"
    assert set(encoded) <= set(ATTR_CHARS) | {"%"}
    return unquote(encoded, errors="strict")


# --- the builder ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [*NAMES.values(), "a/b", HOSTILE], ids=[*NAMES, "slash", "hostile"]
)
def test_a_name_in_a_path_is_one_encoded_segment_that_decodes_back(name: str) -> None:
    path = api_path("projects", "FLY", "labels", name)
    assert is_header_safe(path)
    assert path.count("/") == 6
    assert last_segment(path) == name


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_any_text_builds_header_safe_values_that_round_trip(text: str) -> None:
    path = api_path("labels", text)
    assert is_header_safe(path)
    assert unquote(path.removeprefix("/api/v1/labels/")) == text
    disposition = content_disposition(text or "report.pdf")
    assert is_header_safe(disposition)
    assert filename_of(disposition) == (text or "report.pdf")
    assert is_header_safe(entity_tag("issue", text))
    assert is_header_safe(bearer_challenge("invalid_token", error_description=text))


@given(st.text())
def test_even_lone_surrogates_cannot_break_a_header(text: str) -> None:
    for value in (api_path("x", text), content_disposition(text), entity_tag(text)):
        assert is_header_safe(value)


@pytest.mark.parametrize("name", [*NAMES.values(), HOSTILE], ids=[*NAMES, "hostile"])
def test_content_disposition_has_an_ascii_fallback_and_the_exact_name(name: str) -> None:
    disposition = content_disposition(f"{name}.pdf")
    assert is_header_safe(disposition)
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback.endswith(".pdf")
    assert not set(fallback) & set('"\\%\r\n')
    assert filename_of(disposition) == f"{name}.pdf"


def test_a_next_link_keeps_the_query_encoded() -> None:
    url = URL("http://testserver/api/v1/projects/FLY/issues").include_query_params(
        label=NAMES["emoji"], cursor="abc.def"
    )
    link = next_link(url)
    assert is_header_safe(link)
    target = link[1 : link.index(">")]
    assert URL(target).query == url.query


# --- through the routes ---------------------------------------------------------------------


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


@pytest.mark.parametrize("kind", sorted(NAMES))
async def test_label_names_travel_through_location_and_link(team: Team, kind: str) -> None:
    name = NAMES[kind]
    maintainer = team["maintainer"]
    created = await maintainer.post(
        "/api/v1/projects/FLY/labels", json={"name": name, "color": "#d73a4a"}
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert last_segment(location) == name
    recoloured = await maintainer.patch(location, json={"color": "#00ff00"})
    assert recoloured.status_code == 200, recoloured.text
    assert recoloured.json()["name"] == name

    for _ in range(3):
        issue = await team.issue()
        attached = await team["developer"].post(api_path("issues", issue["key"], "labels", name))
        assert attached.status_code == 200, attached.text
    await team.issue()
    labelled = await walk_pages(
        team["viewer"],
        str(URL("/api/v1/projects/FLY/issues?limit=1").include_query_params(label=name)),
    )
    assert len(labelled) == 3
    assert all(name in [label["name"] for label in issue["labels"]] for issue in labelled)

    removed = await maintainer.delete(location)
    assert removed.status_code == 204, removed.text


async def test_a_member_id_in_any_script_travels_through_location(team: Team, api: Api) -> None:
    claims = api.tokens.claims(sub="пользователь 🐞 דני", preferred_username="stranger")
    user = AuthedClient(api.client, api.tokens.sign(claims))
    user_id = await user.sign_in()
    response = await team["maintainer"].put(
        api_path("projects", "FLY", "members", user_id), json={"role": "viewer"}
    )
    assert response.status_code == 201, response.text
    assert last_segment(response.headers["Location"]) == user_id
    members = await walk_pages(team["viewer"], "/api/v1/projects/FLY/members?limit=2")
    assert user_id in [member["user_id"] for member in members]


def _operations(app: FastAPI) -> list[tuple[str, str, dict]]:
    # The document, not app.routes: the API's routers are included lazily.
    return [
        (method.upper(), path, operation)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
    ]


def _create_routes(app: FastAPI) -> set[tuple[str, str]]:
    """The operations that make something: they answer 201 or 202."""
    return {
        (method, path)
        for method, path, operation in _operations(app)
        if method in {"POST", "PUT"} and {"201", "202"} & set(operation["responses"])
    }


def _list_routes(app: FastAPI) -> set[str]:
    """The operations that answer a page."""
    return {
        path
        for method, path, operation in _operations(app)
        if method == "GET"
        and "Page_"
        in str(operation["responses"].get("200", {}).get("content", {}).get("application/json"))
    }


async def _follow(client: AuthedClient, location: str, body: dict) -> None:
    """A Location answers GET with the created resource; a label's (which has no GET)
    takes a PATCH that changes nothing."""
    assert is_header_safe(location)
    response = await client.get(location)
    if response.status_code == 405:
        response = await client.patch(location, json={})
    assert response.status_code == 200, (location, response.text)
    shown = response.json()
    assert {key: shown[key] for key in ("id", "name", "key") if key in body} == {
        key: body[key] for key in ("id", "name", "key") if key in body
    }


async def test_every_create_locates_what_it_made_and_every_list_links_onwards(
    team: Team, app: FastAPI
) -> None:
    maintainer, reporter = team["maintainer"], team["reporter"]
    creates: dict[tuple[str, str], tuple[AuthedClient, str, dict]] = {
        ("POST", "/api/v1/projects"): (maintainer, "/api/v1/projects", {"name": "Other"}),
        ("POST", "/api/v1/projects/{key}/labels"): (
            maintainer,
            "/api/v1/projects/FLY/labels",
            {"color": "#d73a4a"},
        ),
        ("POST", "/api/v1/projects/{key}/issues"): (
            reporter,
            "/api/v1/projects/FLY/issues",
            {"title": "Crash"},
        ),
        ("POST", "/api/v1/issues/{issue_key}/comments"): (
            reporter,
            "/api/v1/issues/FLY-1/comments",
            {"body": "seen"},
        ),
        ("POST", "/api/v1/projects/{key}/reports"): (reporter, "/api/v1/projects/FLY/reports", {}),
        ("POST", "/api/v1/projects/{key}/milestones"): (
            maintainer,
            "/api/v1/projects/FLY/milestones",
            {"due_on": "2027-01-31"},
        ),
    }
    # Elsewhere: a member's Location (above); a webhook's, whose receiver must pass the
    # address checks (tests/test_webhooks.py); a redelivery answers the delivery it sent again;
    # a relation's, which names it by its two issues (tests/test_relations.py); an attachment's,
    # which takes a multipart file (tests/test_attachments.py).
    assert _create_routes(app) == {
        *creates,
        ("POST", "/api/v1/issues/{issue_key}/relations"),
        ("POST", "/api/v1/issues/{issue_key}/attachments"),
        ("PUT", "/api/v1/projects/{key}/members/{user_id}"),
        ("POST", "/api/v1/projects/{key}/webhooks"),
        ("POST", "/api/v1/projects/{key}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"),
    }
    for index in range(2):
        for route, (client, url, fields) in creates.items():
            body = dict(fields)
            if route[1] == "/api/v1/projects":
                body["key"] = f"OTH{index}"
            if route[1].endswith("/labels"):
                body["name"] = f"{NAMES['cjk']} {index}"
            if route[1].endswith("/milestones"):
                body["title"] = f"{NAMES['rtl']} {index}"
            response = await client.post(url, json=body)
            assert response.status_code in {201, 202}, (route, response.text)
            await _follow(client, response.headers["Location"], response.json())

    # Two relations of FLY-1, for its list of relations to page through.
    third = await reporter.post("/api/v1/projects/FLY/issues", json={"title": "Third"})
    for other in ("FLY-2", third.json()["key"]):
        relation = {"kind": "relates_to", "target": other}
        related = await maintainer.post("/api/v1/issues/FLY-1/relations", json=relation)
        assert related.status_code == 201, related.text
    lists = {
        "/api/v1/projects": "/api/v1/projects",
        "/api/v1/projects/{key}/members": "/api/v1/projects/FLY/members",
        "/api/v1/projects/{key}/labels": "/api/v1/projects/FLY/labels",
        "/api/v1/projects/{key}/issues": "/api/v1/projects/FLY/issues",
        "/api/v1/issues/{issue_key}/comments": "/api/v1/issues/FLY-1/comments",
        "/api/v1/issues/{issue_key}/activity": "/api/v1/issues/FLY-1/activity",
        "/api/v1/issues/{issue_key}/relations": "/api/v1/issues/FLY-1/relations",
        "/api/v1/projects/{key}/milestones": "/api/v1/projects/FLY/milestones",
        "/api/v1/jobs": "/api/v1/jobs",
    }
    # Webhook, attachment, watcher and comment-history lists page with the same helper;
    # tests/test_webhooks.py, test_attachments.py, test_watchers.py and
    # test_comment_revisions.py walk them.
    webhook_lists = {
        "/api/v1/comments/{id}/revisions",
        "/api/v1/projects/{key}/webhooks",
        "/api/v1/projects/{key}/webhooks/{webhook_id}/deliveries",
        "/api/v1/issues/{issue_key}/attachments",
        "/api/v1/issues/{issue_key}/watchers",
        "/api/v1/users/me/watching",
    }
    assert _list_routes(app) <= set(lists) | {"/api/v1/users"} | webhook_lists
    for path in _list_routes(app) - webhook_lists:
        url = lists.get(path, path)
        everything = (await maintainer.get(url, params={"limit": 200})).json()["items"]
        assert len(everything) >= 2, url
        walked = await walk_pages(maintainer, f"{url}?limit=1")
        assert walked == everything, url
