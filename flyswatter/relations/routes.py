"""Relation routes: link issues (blockers, duplicates, related issues, sub-issues), list an
issue's links, unlink, and close an issue as a duplicate in one call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from flyswatter.db import SessionDep
from flyswatter.errors import problem_responses
from flyswatter.http.created import creates
from flyswatter.http.headers import api_path
from flyswatter.http.pagination import Page, lists
from flyswatter.issues.dependencies import (
    IssueForReading,
    IssueKeyPath,
    IssueKeysetDep,
    IssueWriteDep,
)
from flyswatter.issues.models import IssuePublic
from flyswatter.moves.redirects import MOVED
from flyswatter.projects.service import PROJECT_ERRORS
from flyswatter.relations import read_model, service
from flyswatter.relations.models import DuplicateOf, RelationCreate, RelationKind, RelationPublic
from flyswatter.services import settings_of

router = APIRouter(tags=["relations"])

WRITE_ERRORS = problem_responses(409, 412, 422) | PROJECT_ERRORS
KindPath = Annotated[
    RelationKind, Path(description="The relation as the issue in the path sees it.")
]


def _max_depth(request: Request) -> int:
    return settings_of(request.app).subissue_max_depth


@router.get("/issues/{issue_key}/relations", **lists(RelationPublic, PROJECT_ERRORS | MOVED))
async def list_relations(
    session: SessionDep, access: IssueForReading, keyset: IssueKeysetDep
) -> Page[RelationPublic]:
    """The issue's relations, oldest first, each as this issue sees it (`FLY-1 blocks
    FLY-2`); relations to issues of projects the caller may not see are left out."""
    return await read_model.relation_page(session, access, keyset)


@router.post("/issues/{issue_key}/relations", **creates(RelationPublic, WRITE_ERRORS))
async def add_relation(
    body: RelationCreate, request: Request, response: Response, write: IssueWriteDep
) -> RelationPublic:
    """Relate the issue to another one (developers of both issues' projects): `kind` reads
    `<this issue> <kind> <target>`; `child` makes this issue a sub-issue of the target.
    A relation that would close a cycle of `blocks`, of sub-issues or of `duplicates` is a
    409 naming it."""
    public = await service.add_relation(write, body.kind, body.target, _max_depth(request))
    response.headers["Location"] = api_path(
        "issues", write.access.key, "relations", public.kind.value, public.issue.key
    )
    return public


@router.delete(
    "/issues/{issue_key}/relations/{kind}/{target}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=WRITE_ERRORS,
)
async def remove_relation(kind: KindPath, target: IssueKeyPath, write: IssueWriteDep) -> None:
    """Remove a relation, from either issue (`FLY-2/relations/blocked_by/FLY-1` removes what
    `FLY-1/relations/blocks/FLY-2` does); developers of this issue's project may remove its
    relation to an issue of a project they cannot see, by that issue's key."""
    await service.remove_relation(write, kind, target)


@router.post(
    "/issues/{issue_key}/close-as-duplicate", response_model=IssuePublic, responses=WRITE_ERRORS
)
async def close_as_duplicate(
    body: DuplicateOf, request: Request, write: IssueWriteDep
) -> IssuePublic:
    """Mark the issue a duplicate of `of` and close it, in one transaction (developers);
    an issue the workflow cannot close from its status is a 409 and nothing changes."""
    return write.answer(await service.close_as_duplicate(write, body.of, _max_depth(request)))
