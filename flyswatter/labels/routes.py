"""Label routes: each project's label set, managed by its maintainers."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response, status
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.db import SessionDep, first_or_not_found
from flyswatter.errors import Conflict, problem_responses
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
# Held exclusively by what gives a label its name (creating, renaming): names are unique
# whatever their case, which no constraint of the table says, so these writers check the
# names taken one after the other. They wait for the issue writes in flight, as members do.
ProjectForNaming = Annotated[ProjectAccess, Depends(managing("labels", lock="update"))]


def to_public(label: Label) -> LabelPublic:
    return LabelPublic.model_validate(label)


async def _label(
    session: AsyncSession,
    access: ProjectAccess,
    name: str,
    *,
    lock: Literal["read", "change", "delete"] = "change",
) -> Label:
    """The label; for a write, locked until the request ends: a change or deletion of it
    that came first has committed by then, and one that deleted it or took it to another
    name leaves this request a 404, rather than a second deletion or a write to a row that
    is gone.

    A deletion locks it FOR UPDATE, which also waits for the issue writers attaching it
    (their foreign-key check holds it FOR KEY SHARE) and holds off those after: every issue
    that has the label by then is one ``label_deleted`` finds, and none is added after.
    A change locks it FOR NO KEY UPDATE, which lets issues keep attaching it meanwhile."""
    statement = select(Label).where(Label.project_id == access.project_id, Label.name == name)
    missing = f"label {name} not found in {access.project.key}"
    if lock == "delete":
        statement = statement.with_for_update()
    return await first_or_not_found(session, statement, missing, for_update=lock == "change")


async def _refuse_a_name_taken(
    session: AsyncSession, access: ProjectAccess, name: str, label_id: int | None = None
) -> None:
    """A 409 when another label of the project has this name in any case: "Bug" beside
    "bug" would be two labels no one tells apart in a list, a filter or a board."""
    statement = select(Label.name).where(
        Label.project_id == access.project_id, func.lower(Label.name) == name.lower()
    )
    if label_id is not None:
        statement = statement.where(Label.id != label_id)
    taken = (await session.exec(statement.limit(1))).first()
    if taken is not None:
        raise Conflict(f"a label named {taken} already exists in this project")


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


@router.get("/{name}", response_model=LabelPublic, responses=PROJECT_ERRORS)
async def read_label(
    name: LabelNamePath, session: SessionDep, access: ProjectForReading
) -> LabelPublic:
    """One label of the project: where a created or renamed label's ``Location`` points."""
    return to_public(await _label(session, access, name, lock="read"))


@router.post("", **creates(LabelPublic, PROJECT_ERRORS))
async def create_label(
    body: LabelCreate, response: Response, session: SessionDep, access: ProjectForNaming
) -> LabelPublic:
    """Add a label to the project (maintainers); its name is unique in the project,
    whatever its case."""
    access.require_active()
    await _refuse_a_name_taken(session, access, body.name)
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
    name: LabelNamePath, body: LabelUpdate, session: SessionDep, access: ProjectForNaming
) -> LabelPublic:
    """Rename or recolour a label (maintainers); issues keep it. A new name is unique in
    the project whatever its case (a label may change the case of its own)."""
    access.require_active()
    label = await _label(session, access, name)
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] != label.name:
        await _refuse_a_name_taken(session, access, changes["name"], label_id(label))
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
    label = await _label(session, access, name, lock="delete")
    await label_deleted(session, access.principal, label)
    await session.delete(label)
    await session.commit()
