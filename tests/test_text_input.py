"""Text no database stores and no protocol carries is a 422 naming its field, everywhere.

U+0000 (PostgreSQL refuses it, SQLite would store it) and lone surrogates (no driver encodes
them) are refused in every text a client can send: JSON bodies, query parameters, path
segments. One-line values refuse the other control characters too; multi-line text keeps
tab and newlines. The same answers on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flyswatter.text import first_unsafe_character
from tests.support.api import Api, AuthedClient

PROJECT = "/api/v1/projects/FLY"
# A public address: a webhook is accepted without DNS or an allow list.
HOOK_URL = "https://93.184.215.14/hooks"


@dataclass(frozen=True)
class BodyField:
    method: str
    path: str
    field: str
    multiline: bool
    valid: dict[str, Any]


BODY_FIELDS = [
    BodyField("POST", "/api/v1/projects", "key", False, {"key": "NEW", "name": "n"}),
    BodyField("POST", "/api/v1/projects", "name", False, {"key": "NEW", "name": "n"}),
    BodyField("POST", "/api/v1/projects", "description", True, {"key": "NEW", "name": "n"}),
    BodyField("PATCH", PROJECT, "name", False, {}),
    BodyField("PATCH", PROJECT, "description", True, {}),
    BodyField("POST", f"{PROJECT}/labels", "name", False, {"name": "l", "color": "#000000"}),
    BodyField("POST", f"{PROJECT}/labels", "color", False, {"name": "l", "color": "#000000"}),
    BodyField("POST", f"{PROJECT}/labels", "description", True, {"name": "l", "color": "#000000"}),
    BodyField("PATCH", f"{PROJECT}/labels/bug", "name", False, {}),
    BodyField("PATCH", f"{PROJECT}/labels/bug", "description", True, {}),
    BodyField("POST", f"{PROJECT}/issues", "title", False, {"title": "t"}),
    BodyField("POST", f"{PROJECT}/issues", "description", True, {"title": "t"}),
    BodyField("POST", f"{PROJECT}/issues", "assignee_id", False, {"title": "t"}),
    BodyField("POST", f"{PROJECT}/issues", "labels", False, {"title": "t"}),
    BodyField("PATCH", "/api/v1/issues/FLY-1", "title", False, {}),
    BodyField("PATCH", "/api/v1/issues/FLY-1", "description", True, {}),
    BodyField("PATCH", "/api/v1/issues/FLY-1", "assignee_id", False, {}),
    BodyField("PATCH", "/api/v1/issues/FLY-1", "labels", False, {}),
    BodyField("POST", "/api/v1/issues/FLY-1/comments", "body", True, {}),
    BodyField("PATCH", "/api/v1/comments/{comment}", "body", True, {}),
    BodyField("POST", f"{PROJECT}/webhooks", "url", False, {"url": HOOK_URL}),
    BodyField("POST", f"{PROJECT}/webhooks", "description", True, {"url": HOOK_URL}),
    BodyField("POST", f"{PROJECT}/webhooks", "event_types", False, {"url": HOOK_URL}),
    BodyField("PATCH", f"{PROJECT}/webhooks/{{webhook}}", "url", False, {}),
    BodyField("PATCH", f"{PROJECT}/webhooks/{{webhook}}", "description", True, {}),
    BodyField("PATCH", f"{PROJECT}/webhooks/{{webhook}}", "event_types", False, {}),
]
# Fields whose value is a list of one-line strings.
LIST_FIELDS = ("labels", "event_types")

# JSON escapes, sent as written: a client's serialiser could not encode a lone surrogate.
REFUSED_EVERYWHERE = {"nul": "a\\u0000b", "lone high surrogate": "a\\ud800", "lone low": "\\udfff"}
REFUSED_IN_ONE_LINE = {"escape": "a\\u001bb", "newline": "a\\nb", "tab": "a\\tb", "c1": "\\u0085"}
REFUSED_IN_MULTI_LINE = {"escape": "a\\u001b[31m", "vertical tab": "a\\u000bb", "c1": "\\u009b"}


@pytest.fixture
async def world(api: Api) -> dict[str, Any]:
    owner = api.as_user("owner")
    assert (await owner.post("/api/v1/projects", json={"key": "FLY", "name": "F"})).is_success
    await owner.post(f"{PROJECT}/labels", json={"name": "bug", "color": "#d73a4a"})
    await owner.post(f"{PROJECT}/issues", json={"title": "first"})
    comment = await owner.post("/api/v1/issues/FLY-1/comments", json={"body": "hello"})
    webhook = await owner.post(f"{PROJECT}/webhooks", json={"url": HOOK_URL})
    return {"owner": owner, "comment": comment.json()["id"], "webhook": webhook.json()["id"]}


def _body(field: BodyField, escaped: str) -> bytes:
    # Rendered by hand around the escaped text, which must reach the service as written.
    literal = f'"{escaped}"'
    value = f"[{literal}]" if field.field in LIST_FIELDS else literal
    others = {k: v for k, v in field.valid.items() if k != field.field}
    rest = json.dumps(others)[1:-1]
    return ("{" + (rest + ", " if rest else "") + f'"{field.field}": {value}' + "}").encode()


async def _send(
    owner: AuthedClient, field: BodyField, content: bytes, world: dict[str, Any]
) -> Any:
    return await owner.request(
        field.method,
        field.path.format(comment=world["comment"], webhook=world["webhook"]),
        content=content,
        headers={"Content-Type": "application/json"},
    )


def _assert_refused(response: httpx.Response, *loc: str | int) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    locations = [tuple(error["loc"][: len(loc)]) for error in response.json()["errors"]]
    assert tuple(loc) in locations, locations


def _refused_for(field: BodyField) -> dict[str, str]:
    kinds = REFUSED_IN_MULTI_LINE if field.multiline else REFUSED_IN_ONE_LINE
    return REFUSED_EVERYWHERE | kinds


@pytest.mark.parametrize("field", BODY_FIELDS, ids=lambda f: f"{f.method} {f.path} {f.field}")
async def test_unstorable_text_in_a_body_is_a_422_naming_the_field(
    world: dict[str, Any], field: BodyField
) -> None:
    for kind, escaped in _refused_for(field).items():
        response = await _send(world["owner"], field, _body(field, escaped), world)
        assert response.status_code == 422, kind
        _assert_refused(response, "body", field.field)


@pytest.mark.parametrize(
    "field", [field for field in BODY_FIELDS if field.multiline], ids=lambda f: f.path
)
async def test_multi_line_text_keeps_tabs_and_newlines(
    world: dict[str, Any], field: BodyField
) -> None:
    text = "line one\\n\\tindented\\r\\nline three"
    response = await _send(world["owner"], field, _body(field, text), world)
    assert response.is_success, response.text
    assert response.json()[field.field] == "line one\n\tindented\r\nline three"


async def test_refused_text_stores_nothing(world: dict[str, Any]) -> None:
    owner = world["owner"]
    refused = await owner.post(
        "/api/v1/projects",
        content=b'{"key": "NUL", "name": "a\\u0000"}',
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 422
    assert (await owner.get("/api/v1/projects/NUL")).status_code == 404


QUERY_PARAMETERS = [
    (f"{PROJECT}/issues", "assignee"),
    (f"{PROJECT}/issues", "reporter"),
    (f"{PROJECT}/issues", "q"),
    (f"{PROJECT}/issues", "label"),
    (f"{PROJECT}/issues", "cursor"),
    ("/api/v1/projects", "cursor"),
    (f"{PROJECT}/labels", "cursor"),
    (f"{PROJECT}/members", "cursor"),
    ("/api/v1/issues/FLY-1/comments", "cursor"),
    ("/api/v1/issues/FLY-1/activity", "cursor"),
]


@pytest.mark.parametrize(("path", "name"), QUERY_PARAMETERS)
async def test_control_characters_in_a_query_parameter_are_a_422(
    world: dict[str, Any], path: str, name: str
) -> None:
    for encoded in ("a%00b", "%1B%5B2J", "x%0Ay", "%C2%9B"):
        response = await world["owner"].get(f"{path}?{name}={encoded}")
        _assert_refused(response, "query", name)


PATH_SEGMENTS = [
    ("PATCH", f"{PROJECT}/labels/{{}}", "name", {"color": "#000000"}),
    ("DELETE", f"{PROJECT}/labels/{{}}", "name", None),
    ("POST", "/api/v1/issues/FLY-1/labels/{}", "name", None),
    ("DELETE", "/api/v1/issues/FLY-1/labels/{}", "name", None),
    ("PUT", f"{PROJECT}/members/{{}}", "user_id", {"role": "viewer"}),
    ("DELETE", f"{PROJECT}/members/{{}}", "user_id", None),
]


@pytest.mark.parametrize("control", ["\x1f", "\x85", "\u2028"])
async def test_a_title_ending_in_a_control_that_strip_would_remove_is_a_422(
    world: dict[str, Any], control: str
) -> None:
    # str.strip counts these as whitespace: stripped first, they would pass unseen.
    response = await world["owner"].post(f"{PROJECT}/issues", json={"title": f"0{control}"})
    _assert_refused(response, "body", "title")


@pytest.mark.parametrize(("method", "template", "name", "body"), PATH_SEGMENTS)
async def test_control_characters_in_a_path_segment_are_a_422(
    world: dict[str, Any], method: str, template: str, name: str, body: Any
) -> None:
    for encoded in ("a%00b", "a%0D%0Ab", "%C2%85"):
        response = await world["owner"].request(method, template.format(encoded), json=body)
        _assert_refused(response, "path", name)


async def test_undecodable_percent_escapes_are_refused_not_stored(world: dict[str, Any]) -> None:
    # %ED%A0%80 would be a surrogate in UTF-8: the server decodes it as U+FFFD, never as one.
    owner = world["owner"]
    response = await owner.get(f"{PROJECT}/issues?q=%ED%A0%80")
    assert response.status_code == 200
    response = await owner.request("PUT", f"{PROJECT}/members/%ED%A0%80", json={"role": "viewer"})
    assert response.status_code == 404


# Any code point at all: every plane, controls, and the lone surrogates Hypothesis leaves out
# unless asked.
ANY_TEXT = st.text(
    st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), min_size=0, max_size=60
)
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck)
)


def _json(value: Any) -> bytes:
    # ASCII escapes carry lone surrogates, as a client written in another language could.
    return json.dumps(value, ensure_ascii=True).encode()


def _stripped(field: BodyField) -> bool:
    # Titles and project names are stored without surrounding whitespace; a label name with
    # any is refused.
    return field.field == "title" or (field.field == "name" and "/labels" not in field.path)


def _storable(text: str, multiline: bool) -> bool:
    return first_unsafe_character(text, multiline=multiline) is None


@pytest.mark.parametrize("field", BODY_FIELDS, ids=lambda f: f"{f.method} {f.path} {f.field}")
@given(text=ANY_TEXT)
@example(text=" padded ")
@PROPERTY_SETTINGS
@pytest.mark.anyio
async def test_any_unicode_in_a_body_field_is_stored_as_sent_or_refused_with_a_422(
    world: dict[str, Any], field: BodyField, text: str
) -> None:
    value: Any = [text] if field.field in LIST_FIELDS else text
    body = {**field.valid, field.field: value}
    response = await _send(world["owner"], field, _json(body), world)
    assert response.status_code < 500, response.text
    # What the service reads: JSON joins an escaped high and low surrogate into one character.
    received = json.loads(_json(text))
    if not _storable(received, field.multiline):
        _assert_refused(response, "body", field.field)
    elif response.is_success and field.field not in ("labels", "assignee_id", "event_types"):
        stored = response.json()[field.field]
        assert stored == (received.strip() if _stripped(field) else received)


@pytest.mark.parametrize(("path", "name"), QUERY_PARAMETERS)
@given(text=ANY_TEXT)
@PROPERTY_SETTINGS
@pytest.mark.anyio
async def test_any_unicode_in_a_query_parameter_is_answered_without_a_server_error(
    world: dict[str, Any], path: str, name: str, text: str
) -> None:
    encoded = quote(text.encode("utf-8", "surrogatepass"), safe="")
    response = await world["owner"].get(f"{path}?{name}={encoded}")
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code == 422:
        _assert_refused(response, "query", name)


# "." and ".." are not names but dot-segments, which a client removes from the path before it
# sends it (RFC 3986, section 5.2.4): DELETE .../labels/.. would be DELETE on the project.
PATH_TEXT = ANY_TEXT.filter(lambda text: text not in ("", ".", ".."))


@pytest.mark.parametrize(("method", "template", "name", "body"), PATH_SEGMENTS)
@given(text=PATH_TEXT)
@PROPERTY_SETTINGS
@pytest.mark.anyio
async def test_any_unicode_in_a_path_segment_is_answered_without_a_server_error(
    world: dict[str, Any], method: str, template: str, name: str, body: Any, text: str
) -> None:
    encoded = quote(text.encode("utf-8", "surrogatepass"), safe="")
    response = await world["owner"].request(method, template.format(encoded), json=body)
    # A trailing slash is redirected (307); every other answer is the route's own.
    assert response.status_code in (200, 201, 204, 307, 404, 409, 422), response.text
    if response.status_code == 422:
        _assert_refused(response, "path", name)
