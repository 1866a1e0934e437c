"""The outbox: every committed change to an issue writes exactly one event, in its transaction."""

from __future__ import annotations

import json
from typing import Any

import anyio
import sqlalchemy as sa

from flyswatter.config import Settings
from tests.support.api import Api, AuthedClient


def stored_events(settings: Settings) -> list[dict[str, Any]]:
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT project_id, sequence, type, uid, payload FROM event ORDER BY id"
            ).all()
    finally:
        engine.dispose()
    return [
        {"sequence": row[1], "type": row[2], "uid": row[3], **{"doc": json.loads(row[4])}}
        for row in rows
    ]


async def project_with_issue(api: Api) -> tuple[AuthedClient, AuthedClient]:
    owner = api.as_user("olivia")
    developer = api.as_user("dana")
    developer_id = await developer.sign_in()
    assert (
        await owner.post("/api/v1/projects", json={"key": "EVT", "name": "E"})
    ).status_code == 201
    member = await owner.put(
        f"/api/v1/projects/EVT/members/{developer_id}", json={"role": "developer"}
    )
    assert member.status_code == 201
    label = await owner.post("/api/v1/projects/EVT/labels", json={"name": "ui", "color": "#00ff00"})
    assert label.status_code == 201
    created = await owner.post("/api/v1/projects/EVT/issues", json={"title": "Broken"})
    assert created.status_code == 201
    return owner, developer


async def test_each_kind_of_change_writes_one_event_of_its_type(
    api: Api, settings: Settings
) -> None:
    owner, developer = await project_with_issue(api)
    developer_id = await developer.sign_in()
    steps = [
        ("PATCH", "/api/v1/issues/EVT-1", {"title": "Still broken", "priority": "high"}),
        ("POST", "/api/v1/issues/EVT-1/transitions", {"to": "in_progress"}),
        ("PATCH", "/api/v1/issues/EVT-1", {"assignee_id": developer_id}),
        ("POST", "/api/v1/issues/EVT-1/labels/ui", None),
        ("POST", "/api/v1/issues/EVT-1/comments", {"body": "looking"}),
    ]
    for method, url, body in steps:
        response = await owner.request(method, url, json=body)
        assert response.status_code in (200, 201), response.text
    comment_id = response.json()["id"]
    assert (
        await owner.patch(f"/api/v1/comments/{comment_id}", json={"body": "fixed"})
    ).status_code == 200
    assert (await owner.delete(f"/api/v1/comments/{comment_id}")).status_code == 204

    events = stored_events(settings)
    assert [event["type"] for event in events] == [
        "issue.created",
        "issue.updated",
        "issue.transitioned",
        "issue.assigned",
        "issue.labelled",
        "comment.created",
        "comment.updated",
        "comment.deleted",
    ]
    assert [event["sequence"] for event in events] == list(range(1, 9))
    updated = events[1]["doc"]
    # One event for the change, however many fields it touched.
    assert {change["field"] for change in updated["data"]["changes"]} == {"title", "priority"}
    assert updated["data"]["issue"]["title"] == "Still broken"
    assert updated["actor"]["username"] == "olivia"
    assert updated["id"] == events[1]["uid"]
    assert updated["project_key"] == "EVT"
    # The comment is deleted: its text left its events, which still name it.
    for event in events[5:]:
        assert event["doc"]["data"]["comment"] is None
        assert event["doc"]["data"]["comment_id"] == comment_id


async def test_a_deleted_comments_text_leaves_the_stored_events_and_no_other_text_does(
    api: Api, settings: Settings
) -> None:
    owner, developer = await project_with_issue(api)
    leaked = await developer.post(
        "/api/v1/issues/EVT-1/comments", json={"body": "the password is hunter2"}
    )
    kept = await owner.post("/api/v1/issues/EVT-1/comments", json={"body": "rotate it"})
    leaked_id, kept_id = leaked.json()["id"], kept.json()["id"]
    edited = await developer.patch(
        f"/api/v1/comments/{leaked_id}", json={"body": "the password is hunter2, oops"}
    )
    assert edited.status_code == 200
    before = stored_events(settings)
    assert [event["doc"]["data"]["comment"]["body"] for event in before[1:]] == [
        "the password is hunter2",
        "rotate it",
        "the password is hunter2, oops",
    ]
    # Refused deletions change nothing: not another's comment for a developer, not a stale
    # If-Match.
    assert (await developer.delete(f"/api/v1/comments/{kept_id}")).status_code == 403
    stale = await developer.delete(f"/api/v1/comments/{leaked_id}", headers={"If-Match": '"0"'})
    assert stale.status_code == 412
    assert stored_events(settings) == before

    assert (await developer.delete(f"/api/v1/comments/{leaked_id}")).status_code == 204
    after = stored_events(settings)
    assert "hunter2" not in json.dumps(after)
    assert [event["type"] for event in after] == [
        "issue.created",
        "comment.created",
        "comment.created",
        "comment.updated",
        "comment.deleted",
    ]
    # The deleted comment's events keep their id, number and everything but the comment.
    for old, new in zip(before, after, strict=False):
        if old["doc"]["data"].get("comment_id") == leaked_id:
            old["doc"]["data"]["comment"] = None
        assert new == old
    assert after[2]["doc"]["data"]["comment"]["body"] == "rotate it"
    assert after[-1]["doc"]["data"]["comment_id"] == leaked_id


async def test_deleting_an_issue_takes_its_comments_text_out_of_its_events(
    api: Api, settings: Settings
) -> None:
    owner, _ = await project_with_issue(api)
    created = await owner.post("/api/v1/projects/EVT/issues", json={"title": "Other"})
    assert created.status_code == 201
    for key, body in (("EVT-1", "customer data"), ("EVT-2", "stays with its issue")):
        response = await owner.post(f"/api/v1/issues/{key}/comments", json={"body": body})
        assert response.status_code == 201
    assert (await owner.delete("/api/v1/issues/EVT-1")).status_code == 204
    events = stored_events(settings)
    assert "customer data" not in json.dumps(events)
    comments = [
        event["doc"]["data"]["comment"] for event in events if event["type"] == "comment.created"
    ]
    assert comments[0] is None
    assert comments[1]["body"] == "stays with its issue"


async def test_event_carries_the_issue_as_the_api_shows_it(api: Api, settings: Settings) -> None:
    owner, _ = await project_with_issue(api)
    await owner.post("/api/v1/issues/EVT-1/labels/ui")
    shown = (await owner.get("/api/v1/issues/EVT-1")).json()
    assert stored_events(settings)[-1]["doc"]["data"]["issue"] == shown


async def test_deleting_an_issue_writes_issue_deleted_with_the_issue_as_it_was(
    api: Api, settings: Settings
) -> None:
    owner, developer = await project_with_issue(api)
    await owner.post("/api/v1/issues/EVT-1/comments", json={"body": "gone soon"})
    shown = (await owner.get("/api/v1/issues/EVT-1")).json()
    # Refused deletions write nothing: a developer may not, a stale If-Match may not.
    assert (await developer.delete("/api/v1/issues/EVT-1")).status_code == 403
    stale = await owner.delete("/api/v1/issues/EVT-1", headers={"If-Match": '"stale"'})
    assert stale.status_code == 412
    assert (await owner.delete("/api/v1/issues/EVT-1")).status_code == 204

    events = stored_events(settings)
    assert [event["type"] for event in events] == [
        "issue.created",
        "comment.created",
        "issue.deleted",
    ]
    deleted = events[-1]["doc"]
    # The event outlives the issue and its history, and shows it as it was last seen.
    assert deleted["data"]["issue"] == shown
    assert deleted["data"]["changes"] == []
    assert deleted["actor"]["username"] == "olivia"
    assert deleted["sequence"] == 3


async def test_rolled_back_change_leaves_no_event(api: Api, settings: Settings) -> None:
    owner, _ = await project_with_issue(api)
    # The title change is recorded, then the unknown label fails the request: nothing commits.
    failed = await owner.patch("/api/v1/issues/EVT-1", json={"title": "New", "labels": ["nope"]})
    assert failed.status_code == 422
    assert [event["type"] for event in stored_events(settings)] == ["issue.created"]
    assert (await owner.get("/api/v1/issues/EVT-1")).json()["title"] == "Broken"
    # The number the rolled-back change took is given back: the project's events stay gapless.
    assert (await owner.patch("/api/v1/issues/EVT-1", json={"title": "New"})).status_code == 200
    assert [event["sequence"] for event in stored_events(settings)] == [1, 2]


async def test_a_change_that_changes_nothing_writes_no_event(api: Api, settings: Settings) -> None:
    owner, _ = await project_with_issue(api)
    assert (await owner.patch("/api/v1/issues/EVT-1", json={"title": "Broken"})).status_code == 200
    assert len(stored_events(settings)) == 1


async def test_concurrent_changes_to_one_issue_keep_their_order(
    api: Api, settings: Settings
) -> None:
    owner, _ = await project_with_issue(api)

    async def rename(number: int) -> None:
        response = await owner.patch("/api/v1/issues/EVT-1", json={"title": f"Title {number}"})
        assert response.status_code == 200, response.text

    async def file_another() -> None:
        response = await owner.post("/api/v1/projects/EVT/issues", json={"title": "Other"})
        assert response.status_code == 201, response.text

    async with anyio.create_task_group() as group:
        for number in range(8):
            group.start_soon(rename, number)
        group.start_soon(file_another)

    events = stored_events(settings)
    assert [event["sequence"] for event in events] == list(range(1, len(events) + 1))
    versions = [
        event["doc"]["data"]["issue"]["version"]
        for event in events
        if event["doc"]["data"]["issue"]["key"] == "EVT-1"
    ]
    # Sequence order is commit order: each event of the issue shows the next version.
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
