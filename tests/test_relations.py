"""Relations between issues: stored once and read from both sides, cycles refused with the
cycle named, sub-issues capped in depth, hidden issues not found, close-as-duplicate in one
transaction, and the list filters they add."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from flyswatter.events.models import Event
from tests.support.api import Api, AuthedClient, Team, make_team


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


async def issues(team: Team, count: int) -> list[str]:
    return [(await team.issue(title=f"issue {n}"))["key"] for n in range(count)]


async def relate(client: AuthedClient, key: str, kind: str, target: str) -> int:
    response = await client.post(
        f"/api/v1/issues/{key}/relations", json={"kind": kind, "target": target}
    )
    return response.status_code


async def relations(client: AuthedClient, key: str) -> list[tuple[str, str]]:
    response = await client.get(f"/api/v1/issues/{key}/relations")
    assert response.status_code == 200, response.text
    return [(item["kind"], item["issue"]["key"]) for item in response.json()["items"]]


async def history(client: AuthedClient, key: str) -> list[tuple[str, str, object, object]]:
    response = await client.get(f"/api/v1/issues/{key}/activity")
    return [
        (entry["action"], entry["field"], entry["old_value"], entry["new_value"])
        for entry in response.json()["items"]
        if entry["action"] in ("related", "unrelated")
    ]


async def test_a_relation_is_stored_once_read_from_both_sides_and_removed_from_either(
    team: Team, app: FastAPI
) -> None:
    dev = team["developer"]
    a, b = await issues(team, 2)
    response = await dev.post(
        f"/api/v1/issues/{a}/relations", json={"kind": "blocked_by", "target": b}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "blocked_by"
    assert body["issue"]["key"] == b
    assert body["created_by"]["username"] == "developer"
    assert response.headers["Location"] == f"/api/v1/issues/{a}/relations/blocked_by/{b}"
    assert await relations(dev, a) == [("blocked_by", b)]
    assert await relations(dev, b) == [("blocks", a)]
    # The same relation from the other side is the same row, not a second one.
    assert await relate(dev, b, "blocks", a) == 409

    assert (await dev.delete(f"/api/v1/issues/{b}/relations/blocks/{a}")).status_code == 204
    assert await relations(dev, a) == []
    assert await relations(dev, b) == []
    assert (await dev.delete(f"/api/v1/issues/{b}/relations/blocks/{a}")).status_code == 404
    assert await history(dev, a) == [
        ("related", "blocked_by", None, b),
        ("unrelated", "blocked_by", b, None),
    ]
    assert await history(dev, b) == [
        ("related", "blocks", None, a),
        ("unrelated", "blocks", a, None),
    ]
    # Each write told both issues' subscribers, one event per issue.
    async with app.services.engine.connect() as connection:
        payloads = (await connection.execute(select(Event.payload))).scalars().all()  # type: ignore[call-overload]
    changes = [
        (event["data"]["issue"]["key"], change["action"], change["field"])
        for event in map(json.loads, payloads)
        for change in event["data"]["changes"]
        if change["action"] in ("related", "unrelated")
    ]
    assert sorted(changes) == sorted(
        [
            (a, "related", "blocked_by"),
            (b, "related", "blocks"),
            (a, "unrelated", "blocked_by"),
            (b, "unrelated", "blocks"),
        ]
    )


async def test_relates_to_reads_the_same_from_both_sides(team: Team) -> None:
    dev = team["developer"]
    a, b = await issues(team, 2)
    assert await relate(dev, b, "relates_to", a) == 201
    assert await relate(dev, a, "relates_to", b) == 409
    assert await relations(dev, a) == [("relates_to", b)]
    assert (await dev.delete(f"/api/v1/issues/{a}/relations/relates_to/{b}")).status_code == 204


async def loop_of_three_refused(
    dev: AuthedClient, kind: str, inverse: str, keys: tuple[str, str, str]
) -> dict:
    """A ``kind`` B ``kind`` C stored; C ``kind`` A refused naming the cycle, and so is the
    same edge written from A's side (``inverse``). The refusal's problem."""
    a, b, c = keys
    assert await relate(dev, a, kind, b) == 201
    assert await relate(dev, b, kind, c) == 201
    refused = await dev.post(f"/api/v1/issues/{c}/relations", json={"kind": kind, "target": a})
    assert refused.status_code == 409, refused.text
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["cycle"] == [c, a, b, c]
    other_side = await dev.post(
        f"/api/v1/issues/{a}/relations", json={"kind": inverse, "target": c}
    )
    assert other_side.json()["cycle"] == [c, a, b, c]
    return dict(refused.json())


async def test_cycles_of_blockers_and_of_sub_issues_are_refused_naming_the_cycle(
    team: Team,
) -> None:
    dev = team["developer"]
    a, b, c = await issues(team, 3)
    await loop_of_three_refused(dev, "blocks", "blocked_by", (a, b, c))

    assert await relate(dev, a, "parent", b) == 201
    refused = await dev.post(f"/api/v1/issues/{a}/relations", json={"kind": "child", "target": b})
    assert refused.status_code == 409
    assert refused.json()["cycle"] == [b, a, b]
    # At most one parent.
    assert await relate(dev, b, "child", c) == 409
    assert await relations(dev, b) == [("blocked_by", a), ("blocks", c), ("child", a)]
    # Nothing relates to itself, duplicates included.
    for kind in ("duplicates", "blocks", "parent"):
        assert await relate(dev, a, kind, a) == 422


async def test_a_chain_of_duplicates_that_would_loop_is_refused_naming_the_cycle(
    team: Team,
) -> None:
    dev = team["developer"]
    a, b, c = await issues(team, 3)
    # C is, through B, the issue A duplicates: C duplicating A would leave no original.
    # The blockers' refusal, for the same reason.
    problem = await loop_of_three_refused(dev, "duplicates", "duplicated_by", (a, b, c))
    assert problem["type"] == "urn:flyswatter:problem:conflict"
    # The shortest loop too, which the same check refuses.
    refused = await dev.post(
        f"/api/v1/issues/{b}/relations", json={"kind": "duplicates", "target": a}
    )
    assert (refused.status_code, refused.json()["cycle"]) == (409, [b, a, b])
    # Closing C as a duplicate of A is refused whole: C stays open, unrelated to A.
    closing = await dev.post(f"/api/v1/issues/{c}/close-as-duplicate", json={"of": a})
    assert (closing.status_code, closing.json()["cycle"]) == (409, [c, a, b, c])
    assert (await dev.get(f"/api/v1/issues/{c}")).json()["status"] == "open"
    assert await relations(dev, c) == [("duplicated_by", b)]
    assert await relations(dev, a) == [("duplicates", b)]
    assert await history(dev, c) == [("related", "duplicated_by", None, b)]
    # Duplicates that do not loop stay allowed: two copies of one original.
    (d,) = await issues(team, 1)
    assert await relate(dev, d, "duplicates", b) == 201


@pytest.mark.postgres_only
async def test_duplicates_written_at_once_cannot_close_a_cycle_together(team: Team) -> None:
    dev = team["developer"]
    keys = await issues(team, 12)
    pairs = [keys[n : n + 2] for n in range(0, len(keys), 2)]
    # Each pair relates both ways at once: each check alone sees no cycle, yet both rows
    # would make one; the graph's lock makes the second check see the first relation.
    statuses = await asyncio.gather(
        *(
            relate(dev, source, "duplicates", target)
            for pair in pairs
            for source, target in (pair, pair[::-1])
        )
    )
    assert sorted(statuses) == [201] * len(pairs) + [409] * len(pairs), statuses
    for pair in pairs:
        for key in pair:
            assert len(await relations(dev, key)) == 1


async def test_sub_issues_nest_no_deeper_than_the_setting(team: Team) -> None:
    dev = team["developer"]
    keys = await issues(team, 8)
    # keys[0] is the top; keys[1..5] nest one below the other: five levels, the default cap.
    for parent, child in itertools.pairwise(keys[:6]):
        assert await relate(dev, child, "child", parent) == 201
    refused = await dev.post(
        f"/api/v1/issues/{keys[6]}/relations", json={"kind": "child", "target": keys[5]}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["max_depth"] == 5
    # A subtree counts with its own depth: keys[6] with a child of its own fits under
    # keys[3] (levels 4 and 5), not under keys[4].
    assert await relate(dev, keys[7], "child", keys[6]) == 201
    assert await relate(dev, keys[6], "child", keys[4]) == 409
    assert await relate(dev, keys[6], "child", keys[3]) == 201


async def test_issues_the_caller_cannot_see_are_not_found_and_not_listed(
    team: Team, api: Api
) -> None:
    owner, dev = team["maintainer"], team["developer"]
    (mine,) = await issues(team, 1)
    other = api.as_user("stranger")
    await other.sign_in()
    assert (await other.post("/api/v1/projects", json={"key": "OPS", "name": "Ops"})).status_code
    secret = (await other.post("/api/v1/projects/OPS/issues", json={"title": "secret"})).json()
    # Neither 403 nor a hint: the hidden issue is not found.
    assert await relate(dev, mine, "relates_to", secret["key"]) == 404
    assert await relate(dev, mine, "relates_to", "FLY-99") == 404
    # Someone who sees both may relate them; who sees one side only does not see the relation.
    await other.put(
        f"/api/v1/projects/OPS/members/{team.ids['maintainer']}", json={"role": "developer"}
    )
    assert await relate(owner, mine, "relates_to", secret["key"]) == 201
    assert await relations(owner, mine) == [("relates_to", secret["key"])]
    assert await relations(dev, mine) == []
    assert (await team.outsider.get(f"/api/v1/issues/{mine}/relations")).status_code == 404


async def stranger_project(team: Team, api: Api, fly_maintainer_role: str) -> AuthedClient:
    """A stranger's project OPS with two issues, where FLY's maintainer has the role given."""
    stranger = api.as_user("stranger")
    await stranger.sign_in()
    assert (await stranger.post("/api/v1/projects", json={"key": "OPS", "name": "Ops"})).is_success
    added = await stranger.put(
        f"/api/v1/projects/OPS/members/{team.ids['maintainer']}",
        json={"role": fly_maintainer_role},
    )
    assert added.status_code == 201, added.text
    for title in ("one", "two"):
        created = await stranger.post("/api/v1/projects/OPS/issues", json={"title": title})
        assert created.status_code == 201, created.text
    return stranger


async def test_a_viewer_of_the_other_project_cannot_relate_its_issue(team: Team, api: Api) -> None:
    owner = team["maintainer"]
    (mine,) = await issues(team, 1)
    await stranger_project(team, api, "viewer")
    for kind in ("parent", "child", "blocks", "blocked_by", "duplicates", "relates_to"):
        refused = await owner.post(
            f"/api/v1/issues/{mine}/relations", json={"kind": kind, "target": "OPS-1"}
        )
        assert refused.status_code == 403, (kind, refused.text)
        assert "developer role in OPS" in refused.json()["detail"]
    duplicate = await owner.post(f"/api/v1/issues/{mine}/close-as-duplicate", json={"of": "OPS-1"})
    assert duplicate.status_code == 403, duplicate.text
    assert (await owner.get(f"/api/v1/issues/{mine}")).json()["status"] == "open"
    assert await relations(owner, mine) == []
    assert await relations(owner, "OPS-1") == []


async def test_a_developer_removes_a_relation_to_an_issue_of_a_project_they_cannot_see(
    team: Team, api: Api
) -> None:
    owner = team["maintainer"]
    (mine,) = await issues(team, 1)
    stranger = await stranger_project(team, api, "developer")
    # Who is a developer of both projects makes OPS-1 a sub-issue of FLY-1 ...
    assert await relate(owner, mine, "parent", "OPS-1") == 201
    # ... which OPS's maintainer, who cannot see FLY, does not see, yet it holds OPS-1 ...
    assert await relations(stranger, "OPS-1") == []
    assert await relate(stranger, "OPS-2", "parent", "OPS-1") == 409
    # ... so they may remove it from their side by the hidden issue's key; an unrelated
    # hidden issue, or the wrong kind, is the 404 of an issue they cannot see.
    for missing in (f"relations/parent/{mine}", "relations/child/FLY-99"):
        refused = await stranger.delete(f"/api/v1/issues/OPS-1/{missing}")
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"] == "project FLY not found"
    removed = await stranger.delete(f"/api/v1/issues/OPS-1/relations/child/{mine}")
    assert removed.status_code == 204, removed.text
    assert await relations(owner, mine) == []
    assert await history(owner, mine) == [
        ("related", "parent", None, "OPS-1"),
        ("unrelated", "parent", "OPS-1", None),
    ]
    assert await relate(stranger, "OPS-2", "parent", "OPS-1") == 201


async def test_an_event_does_not_name_a_related_issue_of_another_project(
    team: Team, api: Api, app: FastAPI
) -> None:
    owner = team["maintainer"]
    mine, neighbour = await issues(team, 2)
    await stranger_project(team, api, "developer")
    assert await relate(owner, mine, "blocks", "OPS-1") == 201
    assert await relate(owner, mine, "blocks", neighbour) == 201
    # Each project's events reach all its members and its webhooks, whoever sees the other.
    async with app.services.engine.connect() as connection:
        payloads = (await connection.execute(select(Event.payload))).scalars().all()  # type: ignore[call-overload]
    told = [
        (event["data"]["issue"]["key"], change["field"], change["new"])
        for event in map(json.loads, payloads)
        for change in event["data"]["changes"]
        if change["action"] == "related"
    ]
    assert told == [
        (mine, "blocks", "(hidden)"),
        ("OPS-1", "blocked_by", "(hidden)"),
        (mine, "blocks", neighbour),
        (neighbour, "blocked_by", mine),
    ]


@pytest.mark.parametrize(
    ("source", "kind", "target", "flag"),
    [
        # FLY-1 is blocked by OPS-1 ...
        ("FLY-1", "blocked_by", "OPS-1", "blocked"),
        # ... or is the parent of OPS-1.
        ("OPS-1", "child", "FLY-1", "has_children"),
    ],
)
async def test_the_relation_filters_count_only_issues_the_caller_may_see(
    team: Team, api: Api, source: str, kind: str, target: str, flag: str
) -> None:
    owner, viewer = team["maintainer"], team["viewer"]
    mine, loose = await issues(team, 2)
    stranger = await stranger_project(team, api, "developer")
    assert await relate(owner, source, kind, target) == 201

    async def listed(client: AuthedClient, value: str) -> list[str]:
        response = await client.get(f"/api/v1/projects/FLY/issues?{flag}={value}&sort=created_at")
        assert response.status_code == 200, response.text
        return [issue["key"] for issue in response.json()["items"]]

    # FLY's viewer may not see OPS: for them FLY-1 has no relation, as its relations say.
    assert await relations(viewer, mine) == []
    assert await listed(viewer, "true") == []
    assert await listed(viewer, "false") == [mine, loose]
    # A member of both projects, and an admin, see the related issue.
    admin = api.as_user("root", roles=["flyswatter-admin"])
    for client in (owner, admin):
        assert await listed(client, "true") == [mine]
        assert await listed(client, "false") == [loose]
    # A deleted project's issues block no one and are no one's sub-issues.
    assert (await stranger.delete("/api/v1/projects/OPS")).status_code == 204
    for client in (owner, admin):
        assert await listed(client, "true") == []


async def test_close_as_duplicate_relates_and_closes_in_one_transaction(team: Team) -> None:
    dev = team["developer"]
    original, copy, busy = await issues(team, 3)
    response = await dev.post(f"/api/v1/issues/{copy}/close-as-duplicate", json={"of": original})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "closed"
    assert response.json()["closed_at"]
    assert await relations(dev, copy) == [("duplicates", original)]
    assert await relations(dev, original) == [("duplicated_by", copy)]
    # The workflow cannot close an issue in progress: nothing happens, the relation neither.
    await dev.post(f"/api/v1/issues/{busy}/transitions", json={"to": "in_progress"})
    refused = await dev.post(f"/api/v1/issues/{busy}/close-as-duplicate", json={"of": original})
    assert refused.status_code == 409, refused.text
    assert await relations(dev, busy) == []
    assert await relations(dev, original) == [("duplicated_by", copy)]
    assert (
        await dev.post(f"/api/v1/issues/{busy}/close-as-duplicate", json={"of": busy})
    ).status_code == 422


async def test_the_list_filters_by_blockers_parents_and_children(team: Team) -> None:
    dev = team["developer"]
    top, child, blocked, blocker, loose = await issues(team, 5)
    assert await relate(dev, child, "child", top) == 201
    assert await relate(dev, blocker, "blocks", blocked) == 201

    async def listed(query: str) -> set[str]:
        response = await dev.get(f"/api/v1/projects/FLY/issues?{query}")
        assert response.status_code == 200, response.text
        return {issue["key"] for issue in response.json()["items"]}

    assert await listed("blocked=true") == {blocked}
    assert await listed("blocked=false") == {top, child, blocker, loose}
    assert await listed(f"parent={top}") == {child}
    assert await listed(f"parent={child}") == set()
    assert await listed("has_children=true") == {top}
    assert await listed("has_children=false&blocked=false") == {child, blocker, loose}
    # A blocker that is resolved blocks no more.
    await dev.post(f"/api/v1/issues/{blocker}/transitions", json={"to": "in_progress"})
    assert await listed("blocked=true") == {blocked}
    await dev.post(f"/api/v1/issues/{blocker}/transitions", json={"to": "resolved"})
    assert await listed("blocked=true") == set()
    missing = await dev.get("/api/v1/projects/FLY/issues?parent=FLY-99")
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"] == ["query", "parent"]
