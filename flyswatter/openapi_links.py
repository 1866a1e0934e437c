"""OpenAPI links (OpenAPI 3.1 §4.8.20): how the answer of one operation addresses the next.

They tell clients, and stateful fuzzers, that the ``key`` of a created issue is the
``issue_key`` of ``GET /issues/{issue_key}``, and so on, so a generated sequence of calls
reaches the resources it has just made instead of guessing ids. Declared here, in one table,
and written into the generated document by ``add_links``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROJECTS = "/api/v1/projects"
PROJECT = "/api/v1/projects/{key}"
MEMBER = "/api/v1/projects/{key}/members/{user_id}"
LABELS = "/api/v1/projects/{key}/labels"
LABEL = "/api/v1/projects/{key}/labels/{name}"
ISSUES = "/api/v1/projects/{key}/issues"
ISSUE = "/api/v1/issues/{issue_key}"
ISSUE_LABEL = "/api/v1/issues/{issue_key}/labels/{name}"
COMMENTS = "/api/v1/issues/{issue_key}/comments"
COMMENT = "/api/v1/comments/{id}"


@dataclass(frozen=True, slots=True)
class Follow:
    """An operation reachable from a response, and where its parameters come from."""

    name: str
    method: str
    path: str
    parameters: dict[str, str]


@dataclass(frozen=True, slots=True)
class LinksFrom:
    method: str
    path: str
    statuses: tuple[str, ...]
    follows: tuple[Follow, ...]


def _project_operations(key: str) -> tuple[Follow, ...]:
    return (
        Follow("GetProject", "GET", PROJECT, {"key": key}),
        Follow("UpdateProject", "PATCH", PROJECT, {"key": key}),
        Follow("DeleteProject", "DELETE", PROJECT, {"key": key}),
        Follow("ListMembers", "GET", f"{PROJECT}/members", {"key": key}),
        Follow("ListLabels", "GET", LABELS, {"key": key}),
        Follow("CreateLabel", "POST", LABELS, {"key": key}),
        Follow("ListIssues", "GET", ISSUES, {"key": key}),
        Follow("CreateIssue", "POST", ISSUES, {"key": key}),
    )


_ISSUE_KEY = {"issue_key": "$response.body#/key"}

LINKS: tuple[LinksFrom, ...] = (
    LinksFrom("POST", PROJECTS, ("201",), _project_operations("$response.body#/key")),
    LinksFrom(
        "POST",
        ISSUES,
        ("201",),
        (
            Follow("GetIssue", "GET", ISSUE, _ISSUE_KEY),
            Follow("UpdateIssue", "PATCH", ISSUE, _ISSUE_KEY),
            Follow("DeleteIssue", "DELETE", ISSUE, _ISSUE_KEY),
            Follow("TransitionIssue", "POST", f"{ISSUE}/transitions", _ISSUE_KEY),
            Follow("ListActivity", "GET", f"{ISSUE}/activity", _ISSUE_KEY),
            Follow("ListComments", "GET", COMMENTS, _ISSUE_KEY),
            Follow("CreateComment", "POST", COMMENTS, _ISSUE_KEY),
            Follow("AttachLabel", "POST", ISSUE_LABEL, _ISSUE_KEY),
        ),
    ),
    LinksFrom(
        "POST",
        COMMENTS,
        ("201",),
        tuple(
            Follow(name, method, COMMENT, {"id": "$response.body#/id"})
            for name, method in (
                ("GetComment", "GET"),
                ("UpdateComment", "PATCH"),
                ("DeleteComment", "DELETE"),
            )
        ),
    ),
    LinksFrom(
        "POST",
        LABELS,
        ("201",),
        (
            Follow(
                "UpdateLabel",
                "PATCH",
                LABEL,
                {"key": "$request.path.key", "name": "$response.body#/name"},
            ),
            Follow(
                "DeleteLabel",
                "DELETE",
                LABEL,
                {"key": "$request.path.key", "name": "$response.body#/name"},
            ),
            Follow("AttachLabel", "POST", ISSUE_LABEL, {"name": "$response.body#/name"}),
            Follow("DetachLabel", "DELETE", ISSUE_LABEL, {"name": "$response.body#/name"}),
        ),
    ),
    LinksFrom(
        "PUT",
        MEMBER,
        ("200", "201"),
        (
            Follow(
                "RemoveMember",
                "DELETE",
                MEMBER,
                {"key": "$request.path.key", "user_id": "$response.body#/user_id"},
            ),
        ),
    ),
)


def add_links(schema: dict[str, Any]) -> None:
    """Write ``LINKS`` into a generated document (its operation ids are FastAPI's)."""
    paths = schema["paths"]
    for source in LINKS:
        responses = paths[source.path][source.method.lower()]["responses"]
        for status in source.statuses:
            links = responses[status].setdefault("links", {})
            for follow in source.follows:
                target = paths[follow.path][follow.method.lower()]
                links[follow.name] = {
                    "operationId": target["operationId"],
                    "parameters": dict(follow.parameters),
                }
