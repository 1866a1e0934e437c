"""PATCH bodies: an absent field is unchanged; a field every resource has refuses ``null``
(a 422 naming it, nothing changed) rather than read it as "unchanged" and answer 200 to a
change never made; only the fields that may be empty take ``null``, which clears them."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from tests.support.api import Api, make_team

# Every PATCH body's fields, each refusing null or (TAKING_NULL) taking it; a nested object's
# fields are named after it ("change.status").
REFUSING_NULL = {
    "/api/v1/projects/{key}": ["name", "description", "archived"],
    "/api/v1/projects/{key}/labels/{name}": ["name", "color", "description"],
    "/api/v1/projects/{key}/milestones/{milestone_id}": ["title", "description", "state"],
    "/api/v1/projects/{key}/issues": [
        "issues",
        "change.status",
        "change.add_labels",
        "change.remove_labels",
        "change.priority",
    ],
    "/api/v1/issues/{issue_key}": ["title", "description", "type", "priority", "labels"],
    "/api/v1/comments/{id}": ["body"],
    "/api/v1/users/me/preferences": ["auto_follow"],
    "/api/v1/projects/{key}/webhooks/{webhook_id}": [
        "url",
        "event_types",
        "active",
        "description",
    ],
}
TAKING_NULL = {
    "/api/v1/projects/{key}/milestones/{milestone_id}": ["due_on"],
    "/api/v1/projects/{key}/issues": ["change.assignee_id", "change.milestone"],
    "/api/v1/issues/{issue_key}": ["assignee_id", "milestone"],
}
# Where a change is read back, when not at its own path.
READ_BACK = {
    "/api/v1/projects/{key}/issues": "/api/v1/issues/FLY-1",
    "/api/v1/projects/{key}/labels/{name}": "/api/v1/projects/FLY/labels",
}
# A public address, so that the webhook passes the target check without DNS.
PUBLIC_URL = "https://93.184.215.14/hooks/flyswatter"


def _fields(document: dict[str, Any], nullable: bool) -> dict[str, list[str]]:
    schemas = document["components"]["schemas"]

    def deref(schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            return dict(schemas[schema["$ref"].rsplit("/", 1)[-1]])
        return schema

    def takes_null(schema: dict[str, Any]) -> bool:
        return any(option.get("type") == "null" for option in schema.get("anyOf", []))

    found: dict[str, list[str]] = {}
    for path, operations in document["paths"].items():
        if "requestBody" not in operations.get("patch", {}):
            continue
        content = operations["patch"]["requestBody"]["content"]["application/json"]
        for name, field in deref(content["schema"])["properties"].items():
            nested = deref(field)
            inner = nested.get("properties") if "$ref" in field else None
            for full, schema in (
                [(f"{name}.{key}", value) for key, value in inner.items()]
                if inner
                else [(name, field)]
            ):
                if takes_null(schema) == nullable:
                    found.setdefault(path, []).append(full)
    return found


def test_the_document_says_which_patch_fields_take_null(shared_app: FastAPI) -> None:
    document = shared_app.openapi()
    assert _fields(document, nullable=False) == REFUSING_NULL
    assert _fields(document, nullable=True) == TAKING_NULL


def _body(field: str) -> dict[str, Any]:
    if field.startswith("change."):
        return {"issues": ["FLY-1"], "change": {field.removeprefix("change."): None}}
    if field == "issues":
        return {"issues": None, "change": {"priority": "low"}}
    return {field: None}


@pytest.mark.parametrize(
    ("path", "field"),
    [(path, field) for path, fields in REFUSING_NULL.items() for field in fields],
)
async def test_null_for_a_field_every_resource_has_is_a_422_that_changes_nothing(
    api: Api, path: str, field: str
) -> None:
    team = await make_team(api)
    owner = team["maintainer"]
    await team.label("ui")
    await team.issue(labels=["ui"])
    milestone = await owner.post("/api/v1/projects/FLY/milestones", json={"title": "1.0"})
    comment = await owner.post("/api/v1/issues/FLY-1/comments", json={"body": "seen"})
    webhook = await owner.post("/api/v1/projects/FLY/webhooks", json={"url": PUBLIC_URL})
    for created in (milestone, comment, webhook):
        assert created.status_code == 201, created.text
    url = path.format(
        key="FLY",
        name="ui",
        issue_key="FLY-1",
        milestone_id=milestone.json()["id"],
        id=comment.json()["id"],
        webhook_id=webhook.json()["id"],
    )
    read_back = READ_BACK.get(path, url)
    before = await owner.get(read_back)
    assert before.status_code == 200, before.text

    response = await owner.patch(url, json=_body(field))

    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["body", *field.split(".")]
    assert (await owner.get(read_back)).json() == before.json()
