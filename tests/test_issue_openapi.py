"""The OpenAPI document describes every issue, comment and label route completely: each
parameter, the request body, the success answer and every problem+json error it can give."""

from __future__ import annotations

from typing import Any

import pytest

from flyswatter.app import create_app
from flyswatter.config import Settings

PROBLEM = "application/problem+json"
# Every route: no/bad token, missing scope or role, not found or hidden, invalid input.
COMMON_ERRORS = {"401", "403", "404", "422"}
# Conditional writes add 412; writes that can meet the current state add 409.
CONDITIONAL_WRITES = {
    ("PATCH", "/api/v1/issues/{issue_key}"),
    ("DELETE", "/api/v1/issues/{issue_key}"),
    ("POST", "/api/v1/issues/{issue_key}/transitions"),
    ("POST", "/api/v1/issues/{issue_key}/labels/{name}"),
    ("DELETE", "/api/v1/issues/{issue_key}/labels/{name}"),
    ("PATCH", "/api/v1/comments/{id}"),
    ("DELETE", "/api/v1/comments/{id}"),
    ("POST", "/api/v1/issues/{issue_key}/relations"),
    ("DELETE", "/api/v1/issues/{issue_key}/relations/{kind}/{target}"),
    ("POST", "/api/v1/issues/{issue_key}/close-as-duplicate"),
    ("POST", "/api/v1/issues/{issue_key}/move"),
}
# Conditional reads add 412 (If-Match) and 304 (If-None-Match).
CONDITIONAL_READS = {
    ("GET", "/api/v1/issues/{issue_key}"),
    ("GET", "/api/v1/comments/{id}"),
    ("GET", "/api/v1/issues/{issue_key}/attachments/{attachment_id}"),
}
# Answered with a file of any type, not JSON.
DOWNLOADS = {("GET", "/api/v1/issues/{issue_key}/attachments/{attachment_id}")}
IDEMPOTENT_CREATES = {
    ("POST", "/api/v1/projects/{key}/issues"),
    ("POST", "/api/v1/issues/{issue_key}/comments"),
}
# Creating or renaming onto an existing name, or creating in an archived project.
LABEL_WRITES = {
    ("POST", "/api/v1/projects/{key}/labels"),
    ("PATCH", "/api/v1/projects/{key}/labels/{name}"),
}
LISTS = {
    ("GET", "/api/v1/projects/{key}/issues"),
    ("GET", "/api/v1/projects/{key}/labels"),
    ("GET", "/api/v1/issues/{issue_key}/comments"),
    ("GET", "/api/v1/issues/{issue_key}/activity"),
    ("GET", "/api/v1/issues/{issue_key}/relations"),
    ("GET", "/api/v1/issues/{issue_key}/attachments"),
    ("GET", "/api/v1/issues/{issue_key}/watchers"),
    ("GET", "/api/v1/comments/{id}/revisions"),
}
BULK_CHANGE = ("PATCH", "/api/v1/projects/{key}/issues")
LIST_FILTERS = {"status", "assignee", "reporter", "label", "priority", "type", "q", "sort"}
PAGING = {"cursor", "limit"}


def schema() -> dict[str, Any]:
    return create_app(Settings(keycloak_url="http://127.0.0.1:9")).openapi()


SCHEMA = schema()
OPERATIONS = sorted(
    (method.upper(), path, operation)
    for path, operations in SCHEMA["paths"].items()
    if path.startswith(("/api/v1/issues", "/api/v1/comments"))
    or path.startswith("/api/v1/projects/{key}/issues")
    or path.startswith("/api/v1/projects/{key}/labels")
    for method, operation in operations.items()
)
IDS = [f"{method} {path}" for method, path, _ in OPERATIONS]


def parameter_names(operation: dict[str, Any], where: str) -> set[str]:
    return {p["name"].lower() for p in operation.get("parameters", []) if p["in"] == where}


def test_every_issue_comment_and_label_route_is_documented() -> None:
    routes = {(method, path) for method, path, _ in OPERATIONS}
    assert routes >= CONDITIONAL_WRITES | CONDITIONAL_READS | IDEMPOTENT_CREATES | LISTS
    assert len(routes) == 35


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_every_parameter_is_described(method: str, path: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        assert parameter.get("description"), f"{parameter['in']} {parameter['name']}"
        assert parameter.get("schema"), parameter["name"]
    in_path = {segment[1:-1] for segment in path.split("/") if segment.startswith("{")}
    assert parameter_names(operation, "path") == in_path


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_errors_are_documented_as_problem_details(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    responses = operation["responses"]
    expected = set(COMMON_ERRORS)
    if (method, path) in CONDITIONAL_WRITES:
        expected |= {"409", "412"}
    if (method, path) in CONDITIONAL_READS:
        expected.add("412")
    if (method, path) in LABEL_WRITES | IDEMPOTENT_CREATES:
        expected.add("409")
    if (method, path) in LISTS:
        expected.add("400")
    assert expected <= set(responses), sorted(expected - set(responses))
    for status in expected:
        content = responses[status].get("content", {})
        assert PROBLEM in content, status
        assert responses[status]["description"]
    assert "500" in responses


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_success_answer_is_typed(method: str, path: str, operation: dict[str, Any]) -> None:
    successes = [status for status in operation["responses"] if status.startswith("2")]
    if (method, path) == BULK_CHANGE:
        # All or nothing answers 200; partial application, 207 (both a BulkResult).
        assert successes == ["200", "207"]
        successes = ["200"]
    assert len(successes) == 1
    (success,) = successes
    if success == "204":
        assert method == "DELETE"
        return
    # Actions on an issue answer the issue; the other POSTs create.
    actions = ("/transitions", "/labels/{name}", "/close-as-duplicate", "/move")
    if method == "POST" and not path.endswith(actions):
        assert success == "201"
    if (method, path) in DOWNLOADS:
        assert operation["responses"][success]["content"]
        return
    content = operation["responses"][success]["content"]["application/json"]
    assert "$ref" in content["schema"]


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_conditional_and_idempotency_headers_are_documented(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    headers = parameter_names(operation, "header")
    # RFC 9110 evaluates both for any method: 412 for If-Match that names another version,
    # and If-None-Match that names the current one is a 304 on a read, a 412 on a write.
    conditional = (method, path) in CONDITIONAL_WRITES | CONDITIONAL_READS
    assert ("if-match" in headers) == conditional
    assert ("if-none-match" in headers) == conditional
    assert ("idempotency-key" in headers) == ((method, path) in IDEMPOTENT_CREATES)
    if (method, path) in CONDITIONAL_READS:
        assert "304" in operation["responses"]


LIST_OPERATIONS = [case for case in OPERATIONS if (case[0], case[1]) in LISTS]


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    LIST_OPERATIONS,
    ids=[f"{m} {p}" for m, p, _ in LIST_OPERATIONS],
)
def test_lists_document_paging_and_filters(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    query = parameter_names(operation, "query")
    assert query >= PAGING
    if path.endswith("/issues"):
        assert query >= LIST_FILTERS | {"count"}


def test_write_routes_declare_a_request_body_where_they_take_one() -> None:
    with_body = {
        (method, path) for method, path, operation in OPERATIONS if "requestBody" in operation
    }
    assert with_body == {
        ("POST", "/api/v1/projects/{key}/issues"),
        ("PATCH", "/api/v1/issues/{issue_key}"),
        ("POST", "/api/v1/issues/{issue_key}/transitions"),
        ("POST", "/api/v1/issues/{issue_key}/comments"),
        ("POST", "/api/v1/issues/{issue_key}/attachments"),
        ("PATCH", "/api/v1/comments/{id}"),
        ("POST", "/api/v1/projects/{key}/labels"),
        ("PATCH", "/api/v1/projects/{key}/labels/{name}"),
        BULK_CHANGE,
        ("POST", "/api/v1/issues/{issue_key}/relations"),
        ("POST", "/api/v1/issues/{issue_key}/close-as-duplicate"),
        ("POST", "/api/v1/issues/{issue_key}/move"),
    }
