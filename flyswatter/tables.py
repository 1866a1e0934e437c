"""Every table model, imported so that ``SQLModel.metadata`` is complete (Alembic, tests)."""

from flyswatter.attachments.models import Attachment
from flyswatter.comments.models import Comment, CommentRevision
from flyswatter.events.models import Event, EventSequence
from flyswatter.http.idempotency import IdempotencyRecord
from flyswatter.issues.models import Activity, Issue
from flyswatter.jobs.models import Job
from flyswatter.labels.models import IssueLabel, Label
from flyswatter.milestones.models import Milestone
from flyswatter.moves.models import IssueKeyRedirect
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.relations.models import IssueRelation
from flyswatter.storage.models import Artifact, StorageRemoval, StorageWrite
from flyswatter.users.models import User
from flyswatter.watchers.models import UserPreferences, Watcher
from flyswatter.webhooks.models import Webhook, WebhookDelivery, WebhookDeliveryAttempt

__all__ = [
    "Activity",
    "Artifact",
    "Attachment",
    "Comment",
    "CommentRevision",
    "Event",
    "EventSequence",
    "IdempotencyRecord",
    "Issue",
    "IssueKeyRedirect",
    "IssueLabel",
    "IssueRelation",
    "Job",
    "Label",
    "Milestone",
    "Project",
    "ProjectMember",
    "StorageRemoval",
    "StorageWrite",
    "User",
    "UserPreferences",
    "Watcher",
    "Webhook",
    "WebhookDelivery",
    "WebhookDeliveryAttempt",
]
