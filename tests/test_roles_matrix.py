"""What each project role may do with issues, comments and labels, as one explicit table.

Scopes (checked in test_scope_matrix) gate what the client may do; these membership roles
gate what the person may do. Every caller here holds every scope. A target is made afresh
for each caller, by a bystander member, so that no cell depends on another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from tests.support.api import Api, AuthedClient, Team, make_team

CALLERS = ("viewer", "reporter", "developer", "maintainer", "outsider")

# action -> expected status for viewer, reporter, developer, maintainer, outsider
MATRIX: dict[str, tuple[int, int, int, int, int]] = {
    "read issue": (200, 200, 200, 200, 404),
    "list issues": (200, 200, 200, 200, 404),
    "read history": (200, 200, 200, 200, 404),
    "read comments": (200, 200, 200, 200, 404),
    "create issue": (403, 201, 201, 201, 404),
    "comment": (403, 201, 201, 201, 404),
    "edit own issue text": (403, 200, 200, 200, 404),
    "edit any issue": (403, 403, 200, 200, 404),
    "assign": (403, 403, 200, 200, 404),
    "transition": (403, 403, 200, 200, 404),
    "attach label": (403, 403, 200, 200, 404),
    "detach label": (403, 403, 200, 200, 404),
    "delete issue": (403, 403, 403, 204, 404),
    "create label": (403, 403, 403, 201, 404),
    "edit label": (403, 403, 403, 200, 404),
    "delete label": (403, 403, 403, 204, 404),
    "edit own comment": (403, 200, 200, 200, 404),
    "edit others' comment": (403, 403, 403, 200, 404),
    "delete others' comment": (403, 403, 403, 204, 404),
    "request report": (403, 202, 202, 202, 404),
    "read job": (200, 200, 200, 200, 404),
    "read job file": (409, 409, 409, 409, 404),
    "cancel own job": (403, 200, 200, 200, 404),
    "cancel others' job": (403, 403, 403, 200, 404),
    "delete own job": (403, 204, 204, 204, 404),
    "delete others' job": (403, 403, 403, 204, 404),
    "list milestones": (200, 200, 200, 200, 404),
    "create milestone": (403, 403, 403, 201, 404),
    "edit milestone": (403, 403, 403, 200, 404),
    "delete milestone": (403, 403, 403, 204, 404),
    "set own issue's milestone": (403, 200, 200, 200, 404),
    "set any issue's milestone": (403, 403, 200, 200, 404),
    "change issues in bulk": (403, 403, 200, 200, 404),
    "list relations": (200, 200, 200, 200, 404),
    "relate issues": (403, 403, 201, 201, 404),
    "unrelate issues": (403, 403, 204, 204, 404),
    "close as duplicate": (403, 403, 200, 200, 404),
    "move issue": (403, 403, 200, 200, 404),
    "upload attachment": (403, 201, 201, 201, 404),
    "list attachments": (200, 200, 200, 200, 404),
    "download attachment": (200, 200, 200, 200, 404),
    "delete own attachment": (403, 204, 204, 204, 404),
    "delete others' attachment": (403, 403, 403, 204, 404),
    "follow issue": (200, 200, 200, 200, 404),
    "unfollow issue": (200, 200, 200, 200, 404),
    "list watchers": (200, 200, 200, 200, 404),
}

PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)


@dataclass
class Stage:
    """The team plus a bystander reporter who owns every target."""

    team: Team
    bystander: AuthedClient
    counter: int = 0

    async def issue(self, **fields: object) -> str:
        response = await self.bystander.post(
            "/api/v1/projects/FLY/issues", json={"title": "target", **fields}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    async def comment(self, author: AuthedClient | None = None) -> int:
        key = await self.issue()
        response = await (author or self.bystander).post(
            f"/api/v1/issues/{key}/comments", json={"body": "target"}
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def label(self) -> str:
        self.counter += 1
        name = f"label-{self.counter}"
        await self.team.label(name)
        return name

    async def milestone(self) -> int:
        self.counter += 1
        response = await self.team["maintainer"].post(
            "/api/v1/projects/FLY/milestones", json={"title": f"milestone-{self.counter}"}
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def job(self, requester: AuthedClient | None = None) -> str:
        """A queued report job (no worker runs here), requested by the bystander by default."""
        response = await (requester or self.bystander).post("/api/v1/projects/FLY/reports")
        assert response.status_code == 202, response.text
        return str(response.headers["Location"])

    async def attachment(self, uploader: AuthedClient | None = None) -> str:
        """An attachment's URL, on a fresh issue, uploaded by the bystander by default."""
        key = await self.issue()
        response = await (uploader or self.bystander).post(
            f"/api/v1/issues/{key}/attachments", files={"file": ("shot.png", PNG, "image/png")}
        )
        assert response.status_code == 201, response.text
        return str(response.headers["Location"])

    async def set_role(self, caller: str, role: str | None) -> None:
        owner, user_id = self.team["maintainer"], self.team.ids[caller]
        url = f"/api/v1/projects/FLY/members/{user_id}"
        response = await (owner.put(url, json={"role": role}) if role else owner.delete(url))
        assert response.status_code in (200, 201, 204), response.text


Action = Callable[[Stage, str, AuthedClient], Awaitable[int]]


async def read_issue(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get(f"/api/v1/issues/{await stage.issue()}")).status_code


async def list_issues(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get("/api/v1/projects/FLY/issues")).status_code


async def read_history(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get(f"/api/v1/issues/{await stage.issue()}/activity")).status_code


async def read_comments(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get(f"/api/v1/issues/{await stage.issue()}/comments")).status_code


async def create_issue(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.post("/api/v1/projects/FLY/issues", json={"title": "x"})).status_code


async def comment(stage: Stage, caller: str, client: AuthedClient) -> int:
    key = await stage.issue()
    return (await client.post(f"/api/v1/issues/{key}/comments", json={"body": "x"})).status_code


async def own_issue(stage: Stage, caller: str, client: AuthedClient) -> str:
    """An issue the caller reported. The viewer and the outsider reported it while they were
    reporters, and were then demoted or removed: having reported an issue grants nothing
    beyond one's role."""
    original = {"viewer": "viewer", "outsider": None}
    if caller in original:
        await stage.set_role(caller, "reporter")
    response = await client.post("/api/v1/projects/FLY/issues", json={"title": "mine"})
    assert response.status_code == 201, response.text
    if caller in original:
        await stage.set_role(caller, original[caller])
    return str(response.json()["key"])


async def edit_own_issue_text(stage: Stage, caller: str, client: AuthedClient) -> int:
    key = await own_issue(stage, caller, client)
    edit = await client.patch(f"/api/v1/issues/{key}", json={"title": "mine, clearer"})
    return edit.status_code


async def edit_any_issue(stage: Stage, caller: str, client: AuthedClient) -> int:
    key = await stage.issue()
    return (await client.patch(f"/api/v1/issues/{key}", json={"priority": "high"})).status_code


async def assign(stage: Stage, caller: str, client: AuthedClient) -> int:
    key = await stage.issue()
    body = {"assignee_id": stage.team.ids["developer"]}
    return (await client.patch(f"/api/v1/issues/{key}", json=body)).status_code


async def transition(stage: Stage, caller: str, client: AuthedClient) -> int:
    key = await stage.issue()
    body = {"to": "in_progress"}
    return (await client.post(f"/api/v1/issues/{key}/transitions", json=body)).status_code


async def attach_label(stage: Stage, caller: str, client: AuthedClient) -> int:
    key, name = await stage.issue(), await stage.label()
    return (await client.post(f"/api/v1/issues/{key}/labels/{name}")).status_code


async def detach_label(stage: Stage, caller: str, client: AuthedClient) -> int:
    name = await stage.label()
    key = await stage.issue(labels=[name])
    return (await client.delete(f"/api/v1/issues/{key}/labels/{name}")).status_code


async def delete_issue(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.delete(f"/api/v1/issues/{await stage.issue()}")).status_code


async def create_label(stage: Stage, caller: str, client: AuthedClient) -> int:
    body = {"name": f"new-{caller}", "color": "#123456"}
    return (await client.post("/api/v1/projects/FLY/labels", json=body)).status_code


async def edit_label(stage: Stage, caller: str, client: AuthedClient) -> int:
    name = await stage.label()
    body = {"color": "#654321"}
    return (await client.patch(f"/api/v1/projects/FLY/labels/{name}", json=body)).status_code


async def delete_label(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.delete(f"/api/v1/projects/FLY/labels/{await stage.label()}")).status_code


async def edit_own_comment(stage: Stage, caller: str, client: AuthedClient) -> int:
    # As above: the viewer and the outsider wrote it while they were reporters.
    original = {"viewer": "viewer", "outsider": None}
    if caller in original:
        await stage.set_role(caller, "reporter")
    comment_id = await stage.comment(author=client)
    if caller in original:
        await stage.set_role(caller, original[caller])
    edit = await client.patch(f"/api/v1/comments/{comment_id}", json={"body": "clearer"})
    return edit.status_code


async def edit_others_comment(stage: Stage, caller: str, client: AuthedClient) -> int:
    comment_id = await stage.comment()
    edit = await client.patch(f"/api/v1/comments/{comment_id}", json={"body": "moderated"})
    return edit.status_code


async def delete_others_comment(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.delete(f"/api/v1/comments/{await stage.comment()}")).status_code


async def request_report(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.post("/api/v1/projects/FLY/reports")).status_code


async def read_job(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get(await stage.job())).status_code


async def read_job_file(stage: Stage, caller: str, client: AuthedClient) -> int:
    # Still queued: members learn there is no file yet, outsiders learn nothing.
    return (await client.get(f"{await stage.job()}/artifact")).status_code


async def own_job(stage: Stage, caller: str, client: AuthedClient) -> str:
    # As above: the viewer and the outsider asked for it while they were reporters.
    original = {"viewer": "viewer", "outsider": None}
    if caller in original:
        await stage.set_role(caller, "reporter")
    location = await stage.job(client)
    if caller in original:
        await stage.set_role(caller, original[caller])
    return location


async def cancel_own_job(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.post(f"{await own_job(stage, caller, client)}/cancel")).status_code


async def cancel_others_job(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.post(f"{await stage.job()}/cancel")).status_code


async def delete_own_job(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.delete(await own_job(stage, caller, client))).status_code


async def delete_others_job(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.delete(await stage.job())).status_code


async def list_milestones(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get("/api/v1/projects/FLY/milestones")).status_code


async def create_milestone(stage: Stage, caller: str, client: AuthedClient) -> int:
    body = {"title": f"new-{caller}"}
    return (await client.post("/api/v1/projects/FLY/milestones", json=body)).status_code


async def edit_milestone(stage: Stage, caller: str, client: AuthedClient) -> int:
    url = f"/api/v1/projects/FLY/milestones/{await stage.milestone()}"
    return (await client.patch(url, json={"state": "closed"})).status_code


async def delete_milestone(stage: Stage, caller: str, client: AuthedClient) -> int:
    url = f"/api/v1/projects/FLY/milestones/{await stage.milestone()}"
    return (await client.delete(url)).status_code


async def set_own_issues_milestone(stage: Stage, caller: str, client: AuthedClient) -> int:
    await stage.milestone()
    key, body = await own_issue(stage, caller, client), {"milestone": f"milestone-{stage.counter}"}
    return (await client.patch(f"/api/v1/issues/{key}", json=body)).status_code


async def set_any_issues_milestone(stage: Stage, caller: str, client: AuthedClient) -> int:
    await stage.milestone()
    key, body = await stage.issue(), {"milestone": f"milestone-{stage.counter}"}
    return (await client.patch(f"/api/v1/issues/{key}", json=body)).status_code


async def change_issues_in_bulk(stage: Stage, caller: str, client: AuthedClient) -> int:
    body = {"issues": [await stage.issue(), await stage.issue()], "change": {"priority": "high"}}
    return (await client.patch("/api/v1/projects/FLY/issues", json=body)).status_code


async def list_relations(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get(f"/api/v1/issues/{await stage.issue()}/relations")).status_code


async def relate_issues(stage: Stage, caller: str, client: AuthedClient) -> int:
    key, other = await stage.issue(), await stage.issue()
    body = {"kind": "blocks", "target": other}
    return (await client.post(f"/api/v1/issues/{key}/relations", json=body)).status_code


async def unrelate_issues(stage: Stage, caller: str, client: AuthedClient) -> int:
    key, other = await stage.issue(), await stage.issue()
    body = {"kind": "relates_to", "target": other}
    created = await stage.team["maintainer"].post(f"/api/v1/issues/{key}/relations", json=body)
    assert created.status_code == 201, created.text
    return (await client.delete(f"/api/v1/issues/{key}/relations/relates_to/{other}")).status_code


async def close_as_duplicate(stage: Stage, caller: str, client: AuthedClient) -> int:
    key, original = await stage.issue(), await stage.issue()
    url = f"/api/v1/issues/{key}/close-as-duplicate"
    return (await client.post(url, json={"of": original})).status_code


async def move_issue(stage: Stage, caller: str, client: AuthedClient) -> int:
    # Into OPS, where every member of FLY is a developer: what FLY's role allows is checked.
    owner = stage.team["maintainer"]
    if (await owner.get("/api/v1/projects/OPS")).status_code == 404:
        await owner.post("/api/v1/projects", json={"key": "OPS", "name": "Ops"})
        for member in ("viewer", "reporter", "developer"):
            url = f"/api/v1/projects/OPS/members/{stage.team.ids[member]}"
            await owner.put(url, json={"role": "developer"})
    key = await stage.issue()
    return (await client.post(f"/api/v1/issues/{key}/move", json={"project": "OPS"})).status_code


async def upload_attachment(stage: Stage, caller: str, client: AuthedClient) -> int:
    key = await stage.issue()
    files = {"file": ("shot.png", PNG, "image/png")}
    return (await client.post(f"/api/v1/issues/{key}/attachments", files=files)).status_code


async def list_attachments(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get(f"/api/v1/issues/{await stage.issue()}/attachments")).status_code


async def download_attachment(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get(await stage.attachment())).status_code


async def delete_own_attachment(stage: Stage, caller: str, client: AuthedClient) -> int:
    # As above: the viewer and the outsider uploaded it while they were reporters.
    original = {"viewer": "viewer", "outsider": None}
    if caller in original:
        await stage.set_role(caller, "reporter")
    location = await stage.attachment(client)
    if caller in original:
        await stage.set_role(caller, original[caller])
    return (await client.delete(location)).status_code


async def delete_others_attachment(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.delete(await stage.attachment())).status_code


async def follow_issue(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.put(f"/api/v1/issues/{await stage.issue()}/watchers/me")).status_code


async def unfollow_issue(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.delete(f"/api/v1/issues/{await stage.issue()}/watchers/me")).status_code


async def list_watchers(stage: Stage, caller: str, client: AuthedClient) -> int:
    return (await client.get(f"/api/v1/issues/{await stage.issue()}/watchers")).status_code


ACTIONS: dict[str, Action] = {
    "read issue": read_issue,
    "list issues": list_issues,
    "read history": read_history,
    "read comments": read_comments,
    "create issue": create_issue,
    "comment": comment,
    "edit own issue text": edit_own_issue_text,
    "edit any issue": edit_any_issue,
    "assign": assign,
    "transition": transition,
    "attach label": attach_label,
    "detach label": detach_label,
    "delete issue": delete_issue,
    "create label": create_label,
    "edit label": edit_label,
    "delete label": delete_label,
    "edit own comment": edit_own_comment,
    "edit others' comment": edit_others_comment,
    "delete others' comment": delete_others_comment,
    "request report": request_report,
    "read job": read_job,
    "read job file": read_job_file,
    "cancel own job": cancel_own_job,
    "cancel others' job": cancel_others_job,
    "delete own job": delete_own_job,
    "delete others' job": delete_others_job,
    "list milestones": list_milestones,
    "create milestone": create_milestone,
    "edit milestone": edit_milestone,
    "delete milestone": delete_milestone,
    "set own issue's milestone": set_own_issues_milestone,
    "set any issue's milestone": set_any_issues_milestone,
    "change issues in bulk": change_issues_in_bulk,
    "list relations": list_relations,
    "relate issues": relate_issues,
    "unrelate issues": unrelate_issues,
    "close as duplicate": close_as_duplicate,
    "move issue": move_issue,
    "upload attachment": upload_attachment,
    "list attachments": list_attachments,
    "download attachment": download_attachment,
    "delete own attachment": delete_own_attachment,
    "delete others' attachment": delete_others_attachment,
    "follow issue": follow_issue,
    "unfollow issue": unfollow_issue,
    "list watchers": list_watchers,
}


def test_the_table_covers_every_action() -> None:
    assert set(ACTIONS) == set(MATRIX)


@pytest.fixture
async def stage(api: Api) -> Stage:
    team = await make_team(api)
    bystander = api.as_user("bystander")
    bystander_id = await bystander.sign_in()
    response = await team["maintainer"].put(
        f"/api/v1/projects/FLY/members/{bystander_id}", json={"role": "reporter"}
    )
    assert response.status_code == 201
    return Stage(team=team, bystander=bystander)


@pytest.mark.parametrize("action", list(MATRIX))
async def test_role_may_do_exactly_what_the_table_says(stage: Stage, action: str) -> None:
    actual = {}
    for caller in CALLERS:
        client = stage.team.outsider if caller == "outsider" else stage.team[caller]
        actual[caller] = await ACTIONS[action](stage, caller, client)
    assert actual == dict(zip(CALLERS, MATRIX[action], strict=True))
