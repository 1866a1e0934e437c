"""Milestone routes: each project's milestones, managed by its maintainers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from flyswatter.db import MAX_ROW_ID, SessionDep
from flyswatter.errors import problem_responses
from flyswatter.http.conditional import (
    CONDITIONAL_READ_RESPONSES,
    ConditionalReadDep,
    ConditionalWriteDep,
)
from flyswatter.http.created import creates
from flyswatter.http.headers import api_path
from flyswatter.http.pagination import KeysetDep, Page, lists
from flyswatter.milestones import service
from flyswatter.milestones.models import (
    MilestoneCreate,
    MilestonePublic,
    MilestoneState,
    MilestoneUpdate,
)
from flyswatter.projects.service import (
    PROJECT_ERRORS,
    ProjectAccess,
    ProjectForReading,
    managing,
)

MilestoneIdPath = Annotated[
    int, Path(ge=1, le=MAX_ROW_ID, description="The milestone's id.", examples=[1])
]
# Milestones are the project's plan: its maintainers make it, every member reads it. Held
# shared, as by issue writers, so that no change lands once the project is archived.
ProjectForPlanning = Annotated[ProjectAccess, Depends(managing("milestones", lock="share"))]

router = APIRouter(prefix="/projects/{key}/milestones", tags=["milestones"])
WRITE_ERRORS = problem_responses(409, 412) | PROJECT_ERRORS


@router.get("", **lists(MilestonePublic, PROJECT_ERRORS))
async def list_milestones(
    session: SessionDep,
    access: ProjectForReading,
    keyset: KeysetDep,
    state: Annotated[MilestoneState | None, Query(description="Only these.")] = None,
) -> Page[MilestonePublic]:
    """The project's milestones by due date (undated last), then title, with their progress."""
    return await service.milestone_page(session, access, keyset, state)


@router.post("", **creates(MilestonePublic, PROJECT_ERRORS))
async def create_milestone(
    body: MilestoneCreate, response: Response, session: SessionDep, access: ProjectForPlanning
) -> MilestonePublic:
    """Add a milestone to the project (maintainers); titles are unique in a project."""
    access.require_active()
    milestone = await service.create_milestone(session, access, body)
    public = await service.read_milestone(session, milestone)
    response.headers["Location"] = api_path("projects", access.project.key, "milestones", public.id)
    response.headers["ETag"] = service.milestone_etag(public)
    await session.commit()
    return public


@router.get(
    "/{milestone_id}",
    response_model=MilestonePublic,
    responses=CONDITIONAL_READ_RESPONSES | PROJECT_ERRORS,
)
async def get_milestone(
    milestone_id: MilestoneIdPath,
    session: SessionDep,
    access: ProjectForReading,
    conditional: ConditionalReadDep,
) -> MilestonePublic | Response:
    """One milestone with its progress: open and closed (resolved or closed) issues."""
    milestone = await service.load_milestone(session, access, milestone_id)
    public = await service.read_milestone(session, milestone)
    return conditional.answer(service.milestone_etag(public)) or public


@router.patch("/{milestone_id}", response_model=MilestonePublic, responses=WRITE_ERRORS)
async def update_milestone(
    milestone_id: MilestoneIdPath,
    body: MilestoneUpdate,
    session: SessionDep,
    access: ProjectForPlanning,
    conditional: ConditionalWriteDep,
) -> MilestonePublic:
    """Change a milestone (maintainers); with `If-Match`, only if unchanged since read."""
    access.require_active()
    milestone = await service.load_milestone(session, access, milestone_id, for_update=True)
    current = await service.read_milestone(session, milestone)
    conditional.check(service.milestone_etag(current))
    changed = await service.update_milestone(session, milestone, body)
    public = await service.read_milestone(session, milestone) if changed else current
    conditional.tag(service.milestone_etag(public))
    if changed:
        await session.commit()
    return public


@router.delete("/{milestone_id}", status_code=status.HTTP_204_NO_CONTENT, responses=WRITE_ERRORS)
async def delete_milestone(
    milestone_id: MilestoneIdPath,
    session: SessionDep,
    access: ProjectForPlanning,
    conditional: ConditionalWriteDep,
) -> None:
    """Delete a milestone (maintainers). Its issues stay, in no milestone: each gets a new
    version and an entry in its history."""
    access.require_active()
    milestone = await service.load_milestone(session, access, milestone_id, for_update=True)
    conditional.check(service.milestone_etag(await service.read_milestone(session, milestone)))
    await service.delete_milestone(session, access, milestone)
    await session.commit()
