"""Every table model, imported so that ``SQLModel.metadata`` is complete (Alembic, tests)."""

from flyswatter.projects.models import Project, ProjectMember
from flyswatter.users.models import User

__all__ = ["Project", "ProjectMember", "User"]
