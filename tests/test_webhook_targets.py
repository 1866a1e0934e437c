"""Server-side request forgery: which webhook URLs are refused, at creation and at delivery."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from ipaddress import ip_address

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from flyswatter.config import Settings, UnsafeSettings
from flyswatter.db import create_sync_engine
from flyswatter.services import services_of
from flyswatter.webhooks.delivery import deliver_due
from flyswatter.webhooks.targets import (
    IPAddress,
    RefusedTarget,
    TargetPolicy,
    check_target,
    delivery_client,
)
from tests.support.api import Api, AuthedClient
from tests.webhook_receiver import WebhookReceiver, running_receiver

LOOPBACK = ip_address("127.0.0.1")

# URL -> the class of refusal, for a service with the production defaults.
REFUSED = {
    "http://93.184.215.14/hook": "scheme",
    "ftp://93.184.215.14/hook": "scheme",
    "file:///etc/passwd": "scheme",
    "https://user:secret@93.184.215.14/hook": "credentials",
    "https://127.0.0.1/hook": "loopback",
    "https://127.1.2.3/hook": "loopback",
    "https://[::1]/hook": "loopback",
    "https://localhost/hook": "loopback",
    # Integer and hexadecimal spellings, which the system resolver turns into 127.0.0.1.
    "https://2130706433/hook": "loopback",
    "https://0x7f000001/hook": "loopback",
    "https://10.0.0.1/hook": "private",
    "https://172.16.5.4/hook": "private",
    "https://192.168.1.1/hook": "private",
    "https://[fd12:3456::1]/hook": "private",
    "https://169.254.10.10/hook": "link-local",
    "https://[fe80::1]/hook": "link-local",
    "https://224.0.0.1/hook": "multicast",
    "https://[ff02::1]/hook": "multicast",
    "https://0.0.0.0/hook": "unspecified",
    "https://[::]/hook": "unspecified",
    "https://169.254.169.254/latest/meta-data/": "cloud-metadata",
    "https://[fd00:ec2::254]/latest/meta-data/": "cloud-metadata",
    "https://169.254.170.2/v2/credentials": "cloud-metadata",
    "https://100.100.100.200/latest/meta-data": "cloud-metadata",
    "https://metadata.google.internal/computeMetadata/v1/": "cloud-metadata",
    "https://100.64.0.1/hook": "reserved",
    "https://240.0.0.1/hook": "reserved",
    # IPv6 forms that carry an IPv4 address are judged by that address.
    "https://[::ffff:127.0.0.1]/hook": "loopback",
    "https://[::ffff:169.254.169.254]/hook": "cloud-metadata",
    "https://[64:ff9b::a9fe:a9fe]/hook": "cloud-metadata",
    "https://[2002:a00:1::]/hook": "private",
    # Fullwidth digits: the system resolver reads 93.184.215.14; httpx, which sends, refuses.
    "https://\uff19\uff13.184.215.14/hook": "invalid-url",
    # Ports past 65535, which the system resolver wraps around (65616 reaches port 80), or
    # too large to connect to at all; port 0; and ports that httpx reads with int() but that
    # are not written in ASCII digits, so that another reader of the URL sees another port.
    "https://93.184.215.14:99999/hook": "port",
    "https://93.184.215.14:65536/hook": "port",
    "https://[2606:4700::1]:70000/hook": "port",
    "https://example.com:99999/hook": "port",
    "https://93.184.215.14:99999999999999999999/hook": "port",
    "https://example.com:99999999999999999999/hook": "port",
    "https://93.184.215.14:0/hook": "port",
    "https://example.com:0/hook": "port",
    "https://93.184.215.14:-1/hook": "port",
    "https://93.184.215.14:+80/hook": "port",
    "https://example.com:+80/hook": "port",
    "https://93.184.215.14:1_0/hook": "port",
    "https://93.184.215.14:\u0661\u0662/hook": "port",
    "https://93.184.215.14:08o/hook": "invalid-url",
}


def set_targets(app: FastAPI, policy: TargetPolicy) -> None:
    """Run the app's target checks with ``policy`` (another resolver, other settings)."""
    app.running = replace(services_of(app), webhook_targets=policy)  # type: ignore[attr-defined]


def production_policy(**changes: object) -> TargetPolicy:
    return TargetPolicy.from_settings(Settings(**changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "kind"), REFUSED.items(), ids=list(REFUSED))
def test_production_refuses(url: str, kind: str) -> None:
    with pytest.raises(RefusedTarget) as refused:
        check_target(url, production_policy())
    assert refused.value.kind == kind


def test_a_public_https_url_passes() -> None:
    target = check_target("https://93.184.215.14:8443/hook", production_policy())
    assert target.addresses == (ip_address("93.184.215.14"),)
    assert target.port == 8443


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("https://93.184.215.14:1/hook", 1),
        ("https://93.184.215.14:65535/hook", 65535),
        ("https://[2606:4700::1]:8443/hook", 8443),
        # Leading zeros are digits still (RFC 3986), read alike by every parser.
        ("https://93.184.215.14:0443/hook", 443),
        # An empty port is the scheme's.
        ("https://93.184.215.14:/hook", 443),
    ],
)
def test_a_port_from_1_to_65535_passes(url: str, port: int) -> None:
    assert check_target(url, production_policy()).port == port


def test_a_name_that_also_resolves_to_an_internal_address_is_refused() -> None:
    def mixed(host: str, port: int) -> Sequence[IPAddress]:
        return [ip_address("93.184.215.14"), ip_address("10.1.2.3")]

    with pytest.raises(RefusedTarget) as refused:
        check_target("https://mixed.example/hook", TargetPolicy(resolver=mixed))
    assert refused.value.kind == "private"


def test_a_refused_name_says_neither_its_address_nor_whether_it_resolves() -> None:
    """Whoever registers a webhook must not map the service's internal names with it."""

    def internal(host: str, port: int) -> Sequence[IPAddress]:
        return [ip_address("10.20.30.40")]

    def nowhere(host: str, port: int) -> Sequence[IPAddress]:
        raise RefusedTarget("unresolvable", f"{host} does not resolve")

    messages = {}
    for resolver in (internal, nowhere):
        with pytest.raises(RefusedTarget) as refused:
            check_target("https://db.corp.internal/hook", TargetPolicy(resolver=resolver))
        messages[refused.value.kind] = refused.value.message
    assert messages == {
        "private": "db.corp.internal does not resolve to a public address",
        "unresolvable": "db.corp.internal does not resolve to a public address",
    }


def test_the_allow_list_lets_a_private_network_through() -> None:
    policy = production_policy(webhook_allowed_networks=["10.20.0.0/16"])
    assert check_target("https://10.20.1.2/hook", policy).addresses == (ip_address("10.20.1.2"),)
    with pytest.raises(RefusedTarget):
        check_target("https://10.21.1.2/hook", policy)


def test_dev_allows_http_and_loopback_but_not_metadata_or_private_ranges() -> None:
    dev = production_policy(webhook_allow_http=True, webhook_allow_loopback=True)
    check_target("http://127.0.0.1:9000/hook", dev)
    check_target("http://localhost:9000/hook", dev)
    for url, kind in [
        ("http://169.254.169.254/latest/meta-data/", "cloud-metadata"),
        ("http://[fd00:ec2::254]/", "cloud-metadata"),
        ("http://10.0.0.1/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.1.1/hook", "link-local"),
    ]:
        with pytest.raises(RefusedTarget) as refused:
            check_target(url, dev)
        assert refused.value.kind == kind


def test_serve_refuses_to_allow_loopback_targets() -> None:
    settings = Settings(keycloak_url="https://sso.example.org", webhook_allow_loopback=True)
    with pytest.raises(UnsafeSettings, match="WEBHOOK_ALLOWED_NETWORKS"):
        settings.check_production()


def test_an_invalid_allow_list_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="not a network"):
        Settings(webhook_allowed_networks=["nonsense"])


async def owner_of_project(api: Api) -> AuthedClient:
    owner = api.as_user("sam")
    assert (
        await owner.post("/api/v1/projects", json={"key": "SSRF", "name": "S"})
    ).status_code == 201
    return owner


# Ports the target check must refuse before anything is stored or resolved; the last one
# made the system resolver raise an OverflowError, which answered a 500.
BAD_PORTS = [
    "https://93.184.215.14:99999/hook",
    "https://[2606:4700::1]:70000/hook",
    "https://93.184.215.14:0/hook",
    "https://93.184.215.14:+80/hook",
    "https://93.184.215.14:08o/hook",
    "https://hooks.example.org:99999999999999999999/hook",
]
# Refused whatever the port: plain http, private and metadata addresses, no DNS answer.
REFUSED_TARGETS = [
    "http://93.184.215.14/hook",
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/",
    "https://[::ffff:127.0.0.1]/",
    "https://224.0.0.1/",
    "https://0.0.0.0/",
    "https://169.254.10.10/",
    "https://no-such-host.invalid/hook",
]


@pytest.mark.parametrize("url", [*REFUSED_TARGETS, *BAD_PORTS])
async def test_creating_a_webhook_to_a_refused_target_is_422(
    app: FastAPI, api: Api, url: str
) -> None:
    set_targets(app, production_policy())
    owner = await owner_of_project(api)
    response = await owner.post("/api/v1/projects/SSRF/webhooks", json={"url": url})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["body", "url"]
    assert (await owner.get("/api/v1/projects/SSRF/webhooks")).json()["items"] == []


@pytest.mark.parametrize("url", ["https://169.254.169.254/", *BAD_PORTS])
async def test_changing_the_url_to_a_refused_target_is_a_422_that_keeps_the_old_url(
    app: FastAPI, api: Api, url: str
) -> None:
    set_targets(app, production_policy())
    owner = await owner_of_project(api)
    hook = await owner.post(
        "/api/v1/projects/SSRF/webhooks", json={"url": "https://93.184.215.14/hook"}
    )
    path = f"/api/v1/projects/SSRF/webhooks/{hook.json()['id']}"
    response = await owner.patch(path, json={"url": url})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["body", "url"]
    assert (await owner.get(path)).json()["url"] == "https://93.184.215.14/hook"


class FlippingResolver:
    """DNS that answers a public address first and a loopback one afterwards (rebinding)."""

    def __init__(self, later: str) -> None:
        self.later = later
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[IPAddress]:
        self.calls.append(host)
        return [ip_address("93.184.215.14" if len(self.calls) == 1 else self.later)]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture
def settings(base_settings: Settings, clean_database: str) -> Settings:
    return base_settings.model_copy(
        update={"webhook_allow_http": True, "webhook_timeout_seconds": 1.0}
    )


def attempts_of(settings: Settings) -> list[tuple[str, str | None]]:
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT outcome, error FROM webhook_delivery_attempt ORDER BY id"
            ).all()
    finally:
        engine.dispose()
    return [(row[0], row[1]) for row in rows]


async def test_dns_rebinding_after_creation_is_refused_at_delivery(
    app: FastAPI, api: Api, settings: Settings, receiver: WebhookReceiver
) -> None:
    resolver = FlippingResolver(later="127.0.0.1")
    policy = TargetPolicy.from_settings(settings, resolver=resolver)
    set_targets(app, policy)
    owner = await owner_of_project(api)
    url = f"http://rebind.example:{receiver.port}/hook"
    assert (
        await owner.post("/api/v1/projects/SSRF/webhooks", json={"url": url})
    ).status_code == 201
    await owner.post("/api/v1/projects/SSRF/issues", json={"title": "Rebind"})
    engine = create_sync_engine(settings)
    try:
        with delivery_client(settings, policy) as client:
            assert deliver_due(engine, settings, client=client) == {"refused_target": 1}
    finally:
        engine.dispose()
    assert receiver.received == []
    assert attempts_of(settings) == [
        ("refused_target", "rebind.example does not resolve to a public address")
    ]


async def test_delivery_connects_to_the_address_it_checked(
    app: FastAPI, api: Api, settings: Settings, receiver: WebhookReceiver
) -> None:
    """The name is resolved once, by the guard; the connection goes to that very address,
    with the URL's name in Host (the system resolver never sees ``pinned.example``)."""
    settings = settings.model_copy(update={"webhook_allowed_networks": ["127.0.0.1/32"]})
    resolver = FlippingResolver(later="127.0.0.1")
    policy = TargetPolicy.from_settings(settings, resolver=resolver)
    set_targets(app, policy)
    owner = await owner_of_project(api)
    hook = await owner.post(
        "/api/v1/projects/SSRF/webhooks",
        json={"url": f"http://pinned.example:{receiver.port}/hook"},
    )
    receiver.secrets.append(hook.json()["secret"])
    await owner.post("/api/v1/projects/SSRF/issues", json={"title": "Pinned"})
    engine = create_sync_engine(settings)
    try:
        with delivery_client(settings, policy) as client:
            assert deliver_due(engine, settings, client=client) == {"succeeded": 1}
    finally:
        engine.dispose()
    (delivery,) = receiver.wait_for(1)
    assert delivery.headers["host"] == f"pinned.example:{receiver.port}"
    assert delivery.verified_with == [0]
    assert resolver.calls == ["pinned.example", "pinned.example"]


async def test_target_is_checked_again_at_delivery(
    api: Api, settings: Settings, receiver: WebhookReceiver, app: FastAPI
) -> None:
    allowed = settings.model_copy(update={"webhook_allowed_networks": ["127.0.0.1/32"]})
    set_targets(app, TargetPolicy.from_settings(allowed))
    owner = await owner_of_project(api)
    await owner.post("/api/v1/projects/SSRF/webhooks", json={"url": receiver.url})
    await owner.post("/api/v1/projects/SSRF/issues", json={"title": "Later"})
    # The allow list is gone by the time the worker delivers.
    engine = create_sync_engine(settings)
    try:
        assert deliver_due(engine, settings) == {"refused_target": 1}
    finally:
        engine.dispose()
    assert receiver.received == []


@pytest.mark.parametrize(
    "port",
    # 65536 past the receiver's: the system resolver wrapped it around to the receiver's
    # port, so a URL naming one port reached another. Too large for a C long: the
    # connection raised an OverflowError, which no handler expected, and the sweep failed.
    [65536, 10**20],
    ids=["wrapping around", "past a C long"],
)
async def test_a_stored_url_with_a_port_past_65535_is_refused_at_delivery(
    api: Api, settings: Settings, receiver: WebhookReceiver, app: FastAPI, port: int
) -> None:
    """A URL stored before its port was checked (or by another path than the API) is
    refused by the deliverer's own check, recorded as an attempt like any refusal."""
    settings = settings.model_copy(update={"webhook_allowed_networks": ["127.0.0.1/32"]})
    set_targets(app, TargetPolicy.from_settings(settings))
    owner = await owner_of_project(api)
    hook = await owner.post("/api/v1/projects/SSRF/webhooks", json={"url": receiver.url})
    assert hook.status_code == 201, hook.text
    receiver.secrets.append(hook.json()["secret"])
    await owner.post("/api/v1/projects/SSRF/issues", json={"title": "Wrapped"})
    engine = create_sync_engine(settings)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE webhook SET url = :url"),
                {"url": f"http://127.0.0.1:{port + receiver.port}/hook"},
            )
        assert deliver_due(engine, settings) == {"refused_target": 1}
    finally:
        engine.dispose()
    assert receiver.received == []
    assert attempts_of(settings) == [
        ("refused_target", "the URL's port must be a number from 1 to 65535")
    ]


async def test_redirects_are_not_followed(api: Api, settings: Settings, app: FastAPI) -> None:
    settings = settings.model_copy(update={"webhook_allowed_networks": ["127.0.0.1/32"]})
    set_targets(app, TargetPolicy.from_settings(settings))
    with running_receiver(redirect_to="http://169.254.169.254/latest/meta-data/") as receiver:
        receiver.statuses = [302]
        owner = await owner_of_project(api)
        await owner.post("/api/v1/projects/SSRF/webhooks", json={"url": receiver.url})
        await owner.post("/api/v1/projects/SSRF/issues", json={"title": "Moved"})
        engine = create_sync_engine(settings)
        try:
            assert deliver_due(engine, settings) == {"http_error": 1}
        finally:
            engine.dispose()
        assert len(receiver.received) == 1
    assert attempts_of(settings) == [("http_error", "HTTP 302")]


@contextmanager
def keep_alive_receiver() -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """A receiver that keeps connections open (HTTP/1.1), noting each request's Host and the
    client port it came from: two requests from one port came over one connection."""
    seen: list[tuple[str, int]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.append((self.headers["host"], self.client_address[1]))
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port, seen
    finally:
        server.shutdown()
        server.server_close()


async def test_deliveries_to_two_names_at_one_address_share_no_connection(
    app: FastAPI, api: Api, settings: Settings
) -> None:
    """A connection is checked for one name (TLS: its certificate): kept for the next
    delivery to the same address, it would serve another name unchecked."""
    settings = settings.model_copy(
        update={"webhook_allowed_networks": ["127.0.0.1/32"], "webhook_batch_size": 1}
    )
    policy = TargetPolicy.from_settings(settings, resolver=lambda host, port: [LOOPBACK])
    set_targets(app, policy)
    owner = await owner_of_project(api)
    with keep_alive_receiver() as (port, seen):
        for name in ("a.example", "b.example"):
            url = f"http://{name}:{port}/hook"
            created = await owner.post("/api/v1/projects/SSRF/webhooks", json={"url": url})
            assert created.status_code == 201, created.text
        await owner.post("/api/v1/projects/SSRF/issues", json={"title": "Twice"})
        engine = create_sync_engine(settings)
        try:
            # One client for the whole run, as the worker's sweep uses; one delivery a batch.
            with delivery_client(settings, policy) as client:
                assert deliver_due(engine, settings, batches=2, client=client) == {"succeeded": 2}
        finally:
            engine.dispose()
    assert sorted(host for host, _ in seen) == [f"a.example:{port}", f"b.example:{port}"]
    assert len({client_port for _, client_port in seen}) == 2
