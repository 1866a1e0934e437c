"""The OpenAPI document's examples: valid against their schemas, and, sent as Swagger UI
sends them, requests that succeed against ``flyswatter dev``'s demo data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator, FormatChecker

from flyswatter.config import Settings
from flyswatter.dev.demo import DEMO_OWNER, seed_demo_project
from flyswatter.dev.identity_provider import DevIdentityProvider
from flyswatter.dev.realm import REALM_FILE, load_realm
from tests.support.api import Api

# Every operation with a request body, in an order in which each finds what it needs
# (DEMO-1 is the issue the POST creates; comment 1 the comment).
BODY_OPERATIONS = [
    ("POST", "/api/v1/projects"),
    ("PATCH", "/api/v1/projects/{key}"),
    ("PUT", "/api/v1/projects/{key}/members/{user_id}"),
    ("POST", "/api/v1/projects/{key}/labels"),
    ("PATCH", "/api/v1/projects/{key}/labels/{name}"),
    ("POST", "/api/v1/projects/{key}/issues"),
    ("PATCH", "/api/v1/issues/{issue_key}"),
    ("POST", "/api/v1/issues/{issue_key}/transitions"),
    ("POST", "/api/v1/issues/{issue_key}/comments"),
    ("PATCH", "/api/v1/comments/{id}"),
    ("POST", "/api/v1/projects/{key}/reports"),
    ("POST", "/api/v1/projects/{key}/milestones"),
    # A second issue (DEMO-2), for the examples that relate DEMO-1 to it.
    ("POST", "/api/v1/projects/{key}/issues"),
    ("POST", "/api/v1/issues/{issue_key}/relations"),
    ("PATCH", "/api/v1/users/me/preferences"),
]
# Bodies that are files (multipart), sent with a small one (attachment 1 of DEMO-1).
FILE_OPERATIONS = [("POST", "/api/v1/issues/{issue_key}/attachments")]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)
# Webhooks name a receiver on the internet, which the service resolves and checks before it
# takes the subscription: offline, as the tests run, that cannot succeed. Their examples are
# checked against their schemas, not sent.
NOT_SENT = [
    ("POST", "/api/v1/projects/{key}/webhooks"),
    ("PATCH", "/api/v1/projects/{key}/webhooks/{webhook_id}"),
    ("POST", "/api/v1/projects/{key}/webhooks/{webhook_id}/rotate-secret"),
    # A milestone's id is made when it is created (below); the bulk change's example names
    # two issues, where the examples above file one.
    ("PATCH", "/api/v1/projects/{key}/milestones/{milestone_id}"),
    ("PATCH", "/api/v1/projects/{key}/issues"),
    # Moving DEMO-1 away would answer the reads of it that follow with 301; the workflow
    # cannot close it from where the transition example left it (in progress).
    ("POST", "/api/v1/issues/{issue_key}/move"),
    ("POST", "/api/v1/issues/{issue_key}/close-as-duplicate"),
]
# A job's or a milestone's id is made when it is asked for: no example can name one that
# exists. No webhook
# exists (above). The event stream never ends: its own tests read it.
MADE_ON_REQUEST = re.compile(r"\{job_id\}|\{milestone_id\}|/webhooks|/events$")


@pytest.fixture(scope="module")
def document(shared_app: FastAPI) -> dict[str, Any]:
    return shared_app.openapi()


def examples_in(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every example of the document: a schema's ``examples``,
    a parameter's or a media type's ``example`` / ``examples``."""
    if isinstance(node, dict):
        if isinstance(node.get("examples"), list) and not where.endswith("/properties"):
            schema = {key: value for key, value in node.items() if key != "examples"}
            for example in node["examples"]:
                yield where, schema, example
        if "schema" in node:
            if "example" in node:
                yield f"{where}/example", node["schema"], node["example"]
            if isinstance(node.get("examples"), dict):
                for name, example in node["examples"].items():
                    yield f"{where}/examples/{name}", node["schema"], example.get("value")
        for key, value in node.items():
            if key != "examples":
                yield from examples_in(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from examples_in(value, f"{where}/{index}")


def test_every_example_in_the_document_is_valid_against_its_schema(
    document: dict[str, Any],
) -> None:
    found = list(examples_in(document))
    assert len(found) > 40  # path parameters, request bodies, fields
    for where, schema, example in found:
        # The schema's $refs point into the document's components.
        rooted = {**schema, "components": document["components"]}
        validator = Draft202012Validator(rooted, format_checker=FormatChecker())
        errors = [error.message for error in validator.iter_errors(example)]
        assert errors == [], f"{where}: {example!r}: {errors}"


def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    with_body = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert with_body == set(BODY_OPERATIONS) | set(NOT_SENT) | set(FILE_OPERATIONS)
    for method, path in BODY_OPERATIONS + NOT_SENT:
        assert body_example(document, method, path) is not None, f"{method} {path}"


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in schema:  # an optional body: its object
        schema = next(option for option in schema["anyOf"] if "$ref" in option)
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return dict(document["components"]["schemas"][name])
    return schema


def body_example(document: dict[str, Any], method: str, path: str) -> Any:
    operation = document["paths"][path][method.lower()]
    schema = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
    return (schema.get("examples") or [None])[0]


def url_of(document: dict[str, Any], method: str, path: str) -> str:
    """The path with each parameter's example, as Swagger UI fills it in."""
    operation = document["paths"][path][method.lower()]
    values = {
        parameter["name"]: parameter["schema"]["examples"][0]
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
    }
    return re.sub(r"\{(\w+)\}", lambda match: str(values[match.group(1)]), path)


async def test_the_examples_succeed_against_the_demo_data(
    api: Api, settings: Settings, document: dict[str, Any]
) -> None:
    realm = DevIdentityProvider(load_realm(REALM_FILE, {}), "http://127.0.0.1:8081").realm
    await seed_demo_project(settings, realm)
    owner_id = next(user.id for user in realm.demo_users() if user.username == DEMO_OWNER)
    maria = api.as_user(DEMO_OWNER, sub=owner_id)
    for method, path in BODY_OPERATIONS:
        body = body_example(document, method, path)
        response = await maria.request(method, url_of(document, method, path), json=body)
        assert response.is_success, f"{method} {path} {body}: {response.text}"
    for method, path in FILE_OPERATIONS:
        files = {"file": ("shot.png", PNG, "image/png")}
        response = await maria.request(method, url_of(document, method, path), files=files)
        assert response.is_success, f"{method} {path}: {response.text}"
    # With all of that in place, every read Swagger UI fills in answers too.
    for path, operations in document["paths"].items():
        if "get" in operations and path.startswith("/api/") and not MADE_ON_REQUEST.search(path):
            response = await maria.get(url_of(document, "GET", path))
            assert response.status_code == 200, f"GET {path}: {response.text}"
