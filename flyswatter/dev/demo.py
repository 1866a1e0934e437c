"""The demo project ``flyswatter dev`` seeds, with the realm file's demo users as members.

Each demo user holds one project role, so signing in as each of them shows the role matrix:
maria maintains DEMO, dev develops, rita reports, victor only looks, admin is a realm admin
without membership, and the example service's account files issues as a developer.
"""

from __future__ import annotations

import shlex

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.config import Settings
from flyswatter.db import create_engine
from flyswatter.dev.identity_provider import DevIdentityProvider
from flyswatter.dev.realm import DevRealm, Identity
from flyswatter.projects.models import Project, ProjectMember, Role
from flyswatter.users.models import User

DEMO_PROJECT_KEY = "DEMO"
DEMO_OWNER = "maria"
DEMO_ROLES: dict[str, Role] = {
    "maria": Role.maintainer,
    "dev": Role.developer,
    "rita": Role.reporter,
    "victor": Role.viewer,
    "service-account-flyswatter-service": Role.developer,
    "service-account-flyswatter-readonly-service": Role.viewer,
}


def _user_row(identity: Identity) -> User:
    name = " ".join(part for part in (identity.first_name, identity.last_name) if part)
    return User(
        id=identity.id,
        username=identity.username,
        email=identity.email,
        name=name or None,
        is_service_account=identity.service_account_client_id is not None,
        client_id=identity.service_account_client_id,
    )


async def seed_demo_project(settings: Settings, realm: DevRealm) -> None:
    """Create DEMO and its members unless they exist; running it again changes nothing."""
    identities = {identity.username: identity for identity in realm.demo_users()}
    owner = identities[DEMO_OWNER]
    engine = create_engine(settings)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            for identity in identities.values():
                if await session.get(User, identity.id) is None:
                    session.add(_user_row(identity))
            await session.flush()
            project = (
                await session.exec(select(Project).where(Project.key == DEMO_PROJECT_KEY))
            ).first()
            if project is None:
                project = Project(
                    key=DEMO_PROJECT_KEY,
                    name="Demo",
                    description="Seeded by `flyswatter dev`: one demo user for each role.",
                    created_by=owner.id,
                )
                session.add(project)
                await session.flush()
            assert project.id is not None
            for username, role in DEMO_ROLES.items():
                member = identities.get(username)
                if member is None:
                    continue
                if await session.get(ProjectMember, (project.id, member.id)) is None:
                    session.add(ProjectMember(project_id=project.id, user_id=member.id, role=role))
            await session.commit()
    finally:
        await engine.dispose()


def quickstart(api_url: str, provider: DevIdentityProvider) -> str:
    """Copy-pasteable shell commands: get a token from the provider, then call the API."""
    token_url = provider.token_endpoint
    user = provider.realm.users[DEMO_OWNER]
    password = next(c["value"] for c in user["credentials"] if c.get("type") == "password")
    service = provider.realm.clients["flyswatter-service"]
    pick_access_field = (
        "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
    )
    json_header = "-H 'Content-Type: application/json'"
    # -S and --fail-with-body: a failure (a 409 on a second run, say) shows its problem+json
    # and stops the commands, instead of passing silently or an empty token further on.
    curl = "curl -sS --fail-with-body"
    q = shlex.quote
    return "\n".join(
        [
            f"# A token for {DEMO_OWNER} (maintainer of {DEMO_PROJECT_KEY}), password grant:",
            f"TOKEN=$({curl} -d grant_type=password -d client_id=flyswatter-cli "
            f"-d username={q(DEMO_OWNER)} --data-urlencode password={q(password)} "
            f"{token_url} | {pick_access_field})",
            "# Create a project and an issue in it:",
            f'{curl} -H "Authorization: Bearer $TOKEN" {json_header} '
            f"""-d '{{"key": "MINE", "name": "My project"}}' {api_url}/api/v1/projects""",
            f'{curl} -H "Authorization: Bearer $TOKEN" {json_header} '
            f"""-d '{{"title": "My first bug"}}' {api_url}/api/v1/projects/MINE/issues""",
            "# A service token (client credentials) filing an issue in the demo project:",
            f"SERVICE_TOKEN=$({curl} -u {q('flyswatter-service:' + str(service['secret']))} "
            f"-d grant_type=client_credentials {token_url} | {pick_access_field})",
            f'{curl} -H "Authorization: Bearer $SERVICE_TOKEN" {json_header} '
            f"""-d '{{"title": "Nightly import failed"}}' """
            f"{api_url}/api/v1/projects/{DEMO_PROJECT_KEY}/issues",
        ]
    )


def dev_banner(api_url: str, provider: DevIdentityProvider) -> str:
    users = " ".join(
        sorted(u for u in provider.realm.users if not u.startswith("service-account-"))
    )
    return (
        f"Flyswatter (dev) on {api_url}/docs\n"
        f"Development identity provider (realm {provider.realm.name}) on {provider.issuer}\n"
        f"Demo users: {users} (password: see keycloak/flyswatter-realm.json)\n\n"
        f"{quickstart(api_url, provider)}\n"
    )
