"""Every table model, imported so that ``SQLModel.metadata`` is complete (Alembic, tests)."""

from flyswatter.comments.models import Comment
from flyswatter.http.idempotency import IdempotencyRecord
from flyswatter.issues.models import Activity, Issue
from flyswatter.labels.models import IssueLabel, Label
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.users.models import User

__all__ = [
    "Activity",
    "Comment",
    "IdempotencyRecord",
    "Issue",
    "IssueLabel",
    "Label",
    "Project",
    "ProjectMember",
    "User",
]
