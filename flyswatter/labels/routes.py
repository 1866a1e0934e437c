"""Label routes: each project's label set, managed by its maintainers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.db import SessionDep
from flyswatter.errors import Conflict, NotFound, problem_responses
from flyswatter.http.created import creates
from flyswatter.http.headers import api_path
from flyswatter.http.pagination import KeysetDep, Page, lists
from flyswatter.issues.revisions import label_changed, label_deleted
from flyswatter.labels.models import (
    Label,
    LabelCreate,
    LabelNamePath,
    LabelPublic,
    LabelUpdate,
    label_id,
)
from flyswatter.projects.service import (
    PROJECT_ERRORS,
    ProjectAccess,
    ProjectForReading,
    managing,
)

router = APIRouter(prefix="/projects/{key}/labels", tags=["labels"])

# Held shared, as by issue writers: label changes reach the project's issues, and must not
# land once the project is archived, nor after the maintainer's removal.
ProjectForLabelling = Annotated[ProjectAccess, Depends(managing("labels", lock="share"))]


def to_public(label: Label) -> LabelPublic:
    return LabelPublic.model_validate(label)


async def _label(session: AsyncSession, access: ProjectAccess, name: str) -> Label:
    label = (
        await session.exec(
            select(Label).where(Label.project_id == access.project_id, Label.name == name)
        )
    ).first()
    if label is None:
        raise NotFound(f"label {name} not found in {access.project.key}")
    return label


async def _flush_or_conflict(session: AsyncSession, name: str) -> None:
    """Write the label now: a name taken is this 409, before anything else the request
    stages flushes it on its way and fails with the generic one."""
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"a label named {name} already exists in this project") from None


@router.get("", **lists(LabelPublic, PROJECT_ERRORS))
async def list_labels(
    session: SessionDep, access: ProjectForReading, keyset: KeysetDep
) -> Page[LabelPublic]:
    """The project's labels, by name."""
    statement = select(Label).where(Label.project_id == access.project_id)
    return await keyset.page_in_order_of(
        session, statement, col(Label.name), str, lambda page: list(map(to_public, page))
    )


@router.post("", **creates(LabelPublic, PROJECT_ERRORS))
async def create_label(
    body: LabelCreate, response: Response, session: SessionDep, access: ProjectForLabelling
) -> LabelPublic:
    """Add a label to the project (maintainers)."""
    access.require_active()
    label = Label.model_validate(body, update={"project_id": access.project_id})
    session.add(label)
    response.headers["Location"] = api_path("projects", access.project.key, "labels", label.name)
    await _flush_or_conflict(session, body.name)
    await session.commit()
    return to_public(label)


@router.patch(
    "/{name}", response_model=LabelPublic, responses=problem_responses(409) | PROJECT_ERRORS
)
async def update_label(
    name: LabelNamePath, body: LabelUpdate, session: SessionDep, access: ProjectForLabelling
) -> LabelPublic:
    """Rename or recolour a label (maintainers); issues keep it."""
    access.require_active()
    label = await _label(session, access, name)
    changes = body.model_dump(exclude_unset=True)
    if any(getattr(label, field) != value for field, value in changes.items()):
        label.sqlmodel_update(changes)
        session.add(label)
        await _flush_or_conflict(session, label.name)
        # The issues showing the label show it changed: new versions, new ETags.
        await label_changed(session, label_id(label))
        await session.commit()
    return to_public(label)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(409) | PROJECT_ERRORS,
)
async def delete_label(
    name: LabelNamePath, session: SessionDep, access: ProjectForLabelling
) -> None:
    """Delete a label (maintainers); it is removed from every issue that had it, each with
    an entry in its history."""
    access.require_active()
    label = await _label(session, access, name)
    await label_deleted(session, access.principal, label)
    await session.delete(label)
    await session.commit()
