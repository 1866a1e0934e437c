"""Labels: each project's set, managed by maintainers; attached to and detached from issues."""

from __future__ import annotations

import asyncio

import pytest

from flyswatter.config import Settings
from tests.support.api import Api, Team, make_team, walk_pages
from tests.test_events_outbox import stored_events

LABELS = "/api/v1/projects/FLY/labels"


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


def names(issue: dict) -> list[str]:
    return [label["name"] for label in issue["labels"]]


class TestManage:
    async def test_created_label_is_listed_with_its_colour(self, team: Team) -> None:
        response = await team["maintainer"].post(
            LABELS, json={"name": "needs triage", "color": "#A1b2C3", "description": "new"}
        )
        assert response.status_code == 201
        assert response.headers["Location"] == f"{LABELS}/needs%20triage"
        assert response.json() == {"name": "needs triage", "color": "#A1b2C3", "description": "new"}
        listed = await team["viewer"].get(LABELS)
        assert listed.json()["items"] == [response.json()]

    async def test_name_is_unique_per_project(self, team: Team, api: Api) -> None:
        await team.label("bug")
        again = await team["maintainer"].post(LABELS, json={"name": "bug", "color": "#000000"})
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        await team["maintainer"].post("/api/v1/projects", json={"key": "OTH", "name": "Other"})
        other = await team["maintainer"].post(
            "/api/v1/projects/OTH/labels", json={"name": "bug", "color": "#000000"}
        )
        assert other.status_code == 201

    @pytest.mark.parametrize(
        "body",
        [
            {"name": "bug"},
            {"name": "bug", "color": "red"},
            {"name": "bug", "color": "#12345"},
            {"name": "bug", "color": "#1234567"},
            {"name": "bug", "color": "#12345g"},
            {"name": "", "color": "#123456"},
            {"name": "a/b", "color": "#123456"},
            {"name": " padded", "color": "#123456"},
            {"name": "x" * 51, "color": "#123456"},
            {"name": "bug", "color": "#123456", "id": 5},
        ],
    )
    async def test_invalid_label_is_a_422(self, team: Team, body: dict) -> None:
        response = await team["maintainer"].post(LABELS, json=body)
        assert response.status_code == 422
        assert (await team["viewer"].get(LABELS)).json()["items"] == []

    @pytest.mark.parametrize("name", [".", "..", "..."])
    async def test_a_name_of_only_dots_is_a_422_as_its_url_would_lose_it(
        self, team: Team, name: str
    ) -> None:
        # Clients remove "." and ".." segments from a path: /labels/.. is the project's URL.
        response = await team["maintainer"].post(LABELS, json={"name": name, "color": "#123456"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "name"]
        assert (await team["viewer"].get(LABELS)).json()["items"] == []
        await team.label("bug")
        renamed = await team["maintainer"].patch(f"{LABELS}/bug", json={"name": name})
        assert renamed.status_code == 422
        assert renamed.json()["errors"][0]["loc"] == ["body", "name"]
        assert [label["name"] for label in (await team["viewer"].get(LABELS)).json()["items"]] == [
            "bug"
        ]

    @pytest.mark.parametrize("name", [".hidden", "v1.0", "..a", "a..", ". .", "x"])
    async def test_a_name_with_dots_and_something_else_is_accepted(
        self, team: Team, name: str
    ) -> None:
        assert (await team.label(name))["name"] == name

    async def test_labels_are_listed_by_name_page_by_page(self, team: Team) -> None:
        for name in ("urgent", "backend", "ui", "docs", "api"):
            await team.label(name)
        items = await walk_pages(team["viewer"], f"{LABELS}?limit=2")
        assert [item["name"] for item in items] == ["api", "backend", "docs", "ui", "urgent"]

    async def test_rename_and_recolour_keeps_it_on_issues(self, team: Team) -> None:
        await team.label("bug")
        await team.issue(labels=["bug"])
        response = await team["maintainer"].patch(
            f"{LABELS}/bug", json={"name": "defect", "color": "#00ff00"}
        )
        assert response.status_code == 200
        assert response.json()["name"] == "defect"
        assert response.json()["color"] == "#00ff00"
        issue = (await team["viewer"].get("/api/v1/issues/FLY-1")).json()
        assert issue["labels"] == [{"name": "defect", "color": "#00ff00", "description": ""}]

    async def test_rename_onto_an_existing_name_is_a_409(self, team: Team) -> None:
        await team.label("bug")
        await team.label("defect")
        response = await team["maintainer"].patch(f"{LABELS}/bug", json={"name": "defect"})
        assert response.status_code == 409
        assert response.json()["detail"] == "a label named defect already exists in this project"
        listed = (await team["viewer"].get(LABELS)).json()["items"]
        assert [label["name"] for label in listed] == ["bug", "defect"]

    async def test_a_created_or_renamed_labels_location_reads_it(self, team: Team) -> None:
        created = await team["maintainer"].post(LABELS, json={"name": "bug", "color": "#d73a4a"})
        read = await team["viewer"].get(created.headers["Location"])
        assert (read.status_code, read.json()) == (200, created.json())
        renamed = await team["maintainer"].patch(f"{LABELS}/bug", json={"name": "defect"})
        assert (await team["viewer"].get(f"{LABELS}/defect")).json() == renamed.json()
        missing = await team["viewer"].get(f"{LABELS}/bug")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert (await team.outsider.get(f"{LABELS}/defect")).status_code == 404

    async def test_names_are_unique_whatever_their_case(self, team: Team) -> None:
        # "Bug" beside "bug" would be two labels no one can tell apart in a list or a filter.
        await team.label("bug")
        await team.label("ui")
        again = await team["maintainer"].post(LABELS, json={"name": "BUG", "color": "#000000"})
        assert again.status_code == 409
        assert again.json()["detail"] == "a label named bug already exists in this project"
        renamed = await team["maintainer"].patch(f"{LABELS}/ui", json={"name": "Bug"})
        assert renamed.status_code == 409
        # A label may change the case of its own name.
        recased = await team["maintainer"].patch(f"{LABELS}/bug", json={"name": "Bug"})
        assert (recased.status_code, recased.json()["name"]) == (200, "Bug")
        listed = (await team["viewer"].get(LABELS)).json()["items"]
        assert [label["name"] for label in listed] == ["Bug", "ui"]

    async def test_concurrent_creations_of_one_name_in_other_cases_make_one_label(
        self, team: Team
    ) -> None:
        responses = await asyncio.gather(
            *(
                team["maintainer"].post(LABELS, json={"name": name, "color": "#000000"})
                for name in ("bug", "Bug", "BUG", "bUg")
            )
        )
        assert sorted(response.status_code for response in responses) == [201, 409, 409, 409]
        assert len((await team["viewer"].get(LABELS)).json()["items"]) == 1

    async def test_concurrent_renames_onto_one_name_in_other_cases_rename_one(
        self, team: Team
    ) -> None:
        for name in ("a", "b", "c"):
            await team.label(name)
        responses = await asyncio.gather(
            *(
                team["maintainer"].patch(f"{LABELS}/{old}", json={"name": new})
                for old, new in (("a", "same"), ("b", "Same"), ("c", "SAME"))
            )
        )
        assert sorted(response.status_code for response in responses) == [200, 409, 409]
        listed = (await team["viewer"].get(LABELS)).json()["items"]
        assert len([label for label in listed if label["name"].lower() == "same"]) == 1

    async def test_bad_colour_on_update_is_a_422(self, team: Team) -> None:
        await team.label("bug")
        response = await team["maintainer"].patch(f"{LABELS}/bug", json={"color": "blue"})
        assert response.status_code == 422

    async def test_missing_label_is_a_404(self, team: Team) -> None:
        assert (await team["maintainer"].patch(f"{LABELS}/nope", json={})).status_code == 404
        assert (await team["maintainer"].delete(f"{LABELS}/nope")).status_code == 404

    async def test_deleted_label_is_removed_from_issues(self, team: Team) -> None:
        await team.label("bug")
        await team.label("ui")
        await team.issue(labels=["bug", "ui"])
        assert (await team["maintainer"].delete(f"{LABELS}/bug")).status_code == 204
        issue = (await team["viewer"].get("/api/v1/issues/FLY-1")).json()
        assert names(issue) == ["ui"]
        assert [label["name"] for label in (await team["viewer"].get(LABELS)).json()["items"]] == [
            "ui"
        ]

    async def test_deleting_a_label_records_its_removal_in_each_issues_history_and_event(
        self, team: Team, settings: Settings
    ) -> None:
        await team.label("bug")
        await team.label("ui")
        await team.issue(labels=["bug", "ui"])
        await team.issue(labels=["ui"])
        before = (await team["viewer"].get("/api/v1/issues/FLY-1")).json()
        assert (await team["maintainer"].delete(f"{LABELS}/bug")).status_code == 204
        after = (await team["viewer"].get("/api/v1/issues/FLY-1")).json()
        assert after["version"] == before["version"] + 1
        assert after["updated_at"] > before["updated_at"]
        history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
        removal = history[-1]
        assert (removal["action"], removal["field"], removal["old_value"]) == (
            "unlabeled",
            "label",
            "bug",
        )
        assert removal["actor"]["username"] == "maintainer"
        event = stored_events(settings)[-1]
        assert event["type"] == "issue.labelled"
        assert event["doc"]["data"]["issue"]["key"] == "FLY-1"
        assert names(event["doc"]["data"]["issue"]) == ["ui"]
        assert [(c["action"], c["old"]) for c in event["doc"]["data"]["changes"]] == [
            ("unlabeled", "bug")
        ]
        # An issue without the label is untouched.
        assert (await team["viewer"].get("/api/v1/issues/FLY-2")).json()["version"] == 1

    async def test_concurrent_deletes_of_one_label_remove_it_once_from_each_issue(
        self, team: Team
    ) -> None:
        await team.label("bug")
        await team.issue(labels=["bug"])
        responses = await asyncio.gather(
            *(team["maintainer"].delete(f"{LABELS}/bug") for _ in range(3))
        )
        # The deletions wait for each other; those that waited find the label gone.
        assert sorted(response.status_code for response in responses) == [204, 404, 404]
        history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
        assert [entry["action"] for entry in history].count("unlabeled") == 1
        assert (await team["viewer"].get("/api/v1/issues/FLY-1")).json()["version"] == 2

    async def test_an_attachment_racing_the_deletion_is_refused_or_undone_in_the_history(
        self, team: Team
    ) -> None:
        # The deletion removes the label from each issue with an entry in its history and a
        # new version; an issue labelled while it ran must not lose the label silently.
        await team.issue()
        for attempt in range(8):
            name = f"bug{attempt}"
            await team.label(name)
            # An issue that has it already gives the deletion something to do meanwhile.
            await team["developer"].post(f"/api/v1/issues/FLY-1/labels/{name}")
            key = (await team.issue())["key"]
            deleted, attached = await asyncio.gather(
                team["maintainer"].delete(f"{LABELS}/{name}"),
                team["developer"].post(f"/api/v1/issues/{key}/labels/{name}"),
            )
            assert deleted.status_code == 204
            issue = (await team["viewer"].get(f"/api/v1/issues/{key}")).json()
            history = (await team["viewer"].get(f"/api/v1/issues/{key}/activity")).json()["items"]
            actions = [entry["action"] for entry in history]
            assert issue["labels"] == []
            if attached.status_code == 200:
                assert actions == ["created", "labeled", "unlabeled"]
                assert issue["version"] == 3
            else:
                # Too late: the label is gone (not found, or gone under the attachment).
                assert attached.status_code in (409, 422), attached.text
                assert (actions, issue["version"]) == (["created"], 1)

    async def test_changes_racing_the_deletion_land_first_or_find_it_gone(self, team: Team) -> None:
        # Each round is a race, not sure to go wrong: enough of them that one does.
        for attempt in range(8):
            await team.label(f"bug{attempt}")
            url = f"{LABELS}/bug{attempt}"
            responses = await asyncio.gather(
                team["maintainer"].delete(url),
                team["maintainer"].patch(url, json={"name": f"renamed{attempt}"}),
                team["maintainer"].patch(url, json={"color": "#123456"}),
            )
            statuses = [response.status_code for response in responses]
            assert statuses[0] in (204, 404), statuses
            assert set(statuses[1:]) <= {200, 404}, statuses
        # Each label was deleted, or renamed before the deletion came to it (which then
        # found no label of its name).
        left = [label["name"] for label in (await team["viewer"].get(LABELS)).json()["items"]]
        assert all(name.startswith("renamed") for name in left), left

    @pytest.mark.parametrize("role", ["viewer", "reporter", "developer"])
    async def test_only_maintainers_manage_labels(self, team: Team, role: str) -> None:
        await team.label("bug")
        client = team[role]
        create = await client.post(LABELS, json={"name": "ui", "color": "#000000"})
        update = await client.patch(f"{LABELS}/bug", json={"color": "#000000"})
        delete = await client.delete(f"{LABELS}/bug")
        assert (create.status_code, update.status_code, delete.status_code) == (403, 403, 403)
        assert (await client.get(LABELS)).status_code == 200

    async def test_outsider_gets_404(self, team: Team) -> None:
        await team.label("bug")
        assert (await team.outsider.get(LABELS)).status_code == 404
        created = await team.outsider.post(LABELS, json={"name": "ui", "color": "#000000"})
        assert created.status_code == 404


class TestAttach:
    @pytest.fixture
    async def labelled(self, team: Team) -> Team:
        for name in ("bug", "ui", "backend"):
            await team.label(name)
        await team.issue()
        return team

    async def test_attach_and_detach_by_name(self, labelled: Team) -> None:
        dev = labelled["developer"]
        attached = await dev.post("/api/v1/issues/FLY-1/labels/ui")
        assert attached.status_code == 200
        assert names(attached.json()) == ["ui"]
        assert attached.json()["version"] == 2
        assert attached.headers["ETag"].endswith('-v2"')
        both = await dev.post("/api/v1/issues/FLY-1/labels/bug")
        assert names(both.json()) == ["bug", "ui"]
        detached = await dev.delete("/api/v1/issues/FLY-1/labels/ui")
        assert detached.status_code == 200
        assert names(detached.json()) == ["bug"]
        assert detached.json()["version"] == 4

    async def test_attaching_twice_changes_nothing(self, labelled: Team) -> None:
        dev = labelled["developer"]
        first = await dev.post("/api/v1/issues/FLY-1/labels/ui")
        second = await dev.post("/api/v1/issues/FLY-1/labels/ui")
        assert second.status_code == 200
        assert second.json() == first.json()

    async def test_detaching_an_absent_label_is_a_404(self, labelled: Team) -> None:
        response = await labelled["developer"].delete("/api/v1/issues/FLY-1/labels/ui")
        assert response.status_code == 404
        unknown = await labelled["developer"].delete("/api/v1/issues/FLY-1/labels/nope")
        assert unknown.status_code == 404

    async def test_attaching_an_unknown_label_is_a_422(self, labelled: Team) -> None:
        response = await labelled["developer"].post("/api/v1/issues/FLY-1/labels/nope")
        assert response.status_code == 422
        issue = (await labelled["viewer"].get("/api/v1/issues/FLY-1")).json()
        assert (issue["labels"], issue["version"]) == ([], 1)

    async def test_another_projects_label_cannot_be_attached(
        self, labelled: Team, api: Api
    ) -> None:
        owner = labelled["maintainer"]
        await owner.post("/api/v1/projects", json={"key": "OTH", "name": "Other"})
        await owner.post(
            "/api/v1/projects/OTH/labels", json={"name": "only-here", "color": "#000000"}
        )
        response = await owner.post("/api/v1/issues/FLY-1/labels/only-here")
        assert response.status_code == 422

    async def test_patch_labels_replaces_the_set(self, labelled: Team) -> None:
        dev = labelled["developer"]
        await dev.post("/api/v1/issues/FLY-1/labels/bug")
        response = await dev.patch("/api/v1/issues/FLY-1", json={"labels": ["ui", "backend"]})
        assert response.status_code == 200
        assert names(response.json()) == ["backend", "ui"]
        cleared = await dev.patch("/api/v1/issues/FLY-1", json={"labels": []})
        assert names(cleared.json()) == []

    async def test_patch_with_the_same_labels_keeps_the_version(self, labelled: Team) -> None:
        dev = labelled["developer"]
        await dev.patch("/api/v1/issues/FLY-1", json={"labels": ["ui", "bug"]})
        response = await dev.patch("/api/v1/issues/FLY-1", json={"labels": ["bug", "ui", "ui"]})
        assert response.json()["version"] == 2

    async def test_patch_with_an_unknown_label_changes_nothing(self, labelled: Team) -> None:
        dev = labelled["developer"]
        await dev.patch("/api/v1/issues/FLY-1", json={"labels": ["ui"]})
        response = await dev.patch(
            "/api/v1/issues/FLY-1", json={"labels": ["bug", "nope"], "title": "renamed"}
        )
        assert response.status_code == 422
        issue = (await labelled["viewer"].get("/api/v1/issues/FLY-1")).json()
        assert names(issue) == ["ui"]
        assert issue["title"] == "Crash on save"

    @pytest.mark.parametrize("role", ["viewer", "reporter"])
    async def test_labelling_needs_the_developer_role(self, labelled: Team, role: str) -> None:
        client = labelled[role]
        assert (await client.post("/api/v1/issues/FLY-1/labels/ui")).status_code == 403
        patched = await client.patch("/api/v1/issues/FLY-1", json={"labels": ["ui"]})
        assert patched.status_code == 403
        assert (await labelled.outsider.post("/api/v1/issues/FLY-1/labels/ui")).status_code == 404

    async def test_list_filters_by_label(self, labelled: Team) -> None:
        await labelled.issue(labels=["ui"])
        await labelled.issue(labels=["ui", "bug"])
        ui = await labelled["viewer"].get("/api/v1/projects/FLY/issues", params={"label": "ui"})
        assert sorted(issue["number"] for issue in ui.json()["items"]) == [2, 3]
        both = await labelled["viewer"].get(
            "/api/v1/projects/FLY/issues", params=[("label", "ui"), ("label", "bug")]
        )
        assert [issue["number"] for issue in both.json()["items"]] == [3]
