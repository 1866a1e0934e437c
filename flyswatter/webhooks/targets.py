"""Which webhook URLs the service may call: the guard against server-side request forgery.

A webhook URL is the one place where a caller makes the service open a connection of their
choosing. The rules: https (plain http only where a setting allows it), no credentials in
the URL, a port from 1 to 65535 written in digits, and every address the host resolves to
must be a public one; loopback, private, link-local, multicast, unspecified, reserved and
cloud-metadata addresses are refused unless the address is in the allow list. Addresses
that embed an IPv4 one (IPv4-mapped, 6to4, NAT64) are judged by the address they embed.

The check runs when a webhook is created or changed (a 422) and again on every delivery,
where ``PinnedTransport`` connects to the very address it checked: a DNS answer that changes
between the check and the connection (DNS rebinding) has nothing left to change. Redirects
are never followed.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

import httpx

from flyswatter.config import Settings

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Instance metadata services, which hand out cloud credentials: AWS, GCP, Azure, OpenStack
# and DigitalOcean (169.254.169.254), AWS over IPv6, AWS ECS task metadata, Alibaba Cloud,
# Oracle Cloud, and Azure's wire server (a public-looking address).
CLOUD_METADATA = frozenset(
    ip_address(address)
    for address in (
        "169.254.169.254",
        "fd00:ec2::254",
        "169.254.170.2",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
    )
)
CLOUD_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "instance-data"})
_NAT64 = ip_network("64:ff9b::/96")

Resolver = Callable[[str, int], Sequence[IPAddress]]


class RefusedTarget(Exception):
    """A URL the service will not call; ``kind`` names the rule, the message the reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise RefusedTarget("unresolvable", f"{host} does not resolve") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RefusedTarget("unresolvable", f"{host} does not resolve")
    return addresses


@dataclass(frozen=True)
class TargetPolicy:
    allow_http: bool = False
    allow_loopback: bool = False
    allowed_networks: tuple[Network, ...] = ()
    resolver: Resolver = field(default=resolve, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver = resolve) -> TargetPolicy:
        return cls(
            allow_http=settings.webhook_allow_http,
            allow_loopback=settings.webhook_allow_loopback,
            allowed_networks=tuple(
                ip_network(network, strict=False) for network in settings.webhook_allowed_networks
            ),
            resolver=resolver,
        )


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries, if it carries one."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refused_kind(address: IPAddress) -> str | None:
    """The class of address that is refused, or None for a public one."""
    for candidate in dict.fromkeys((_embedded(address), address)):
        if candidate in CLOUD_METADATA:
            return "cloud-metadata"
        if candidate.is_loopback:
            return "loopback"
        if candidate.is_unspecified:
            return "unspecified"
        if candidate.is_link_local:
            return "link-local"
        if candidate.is_multicast:
            return "multicast"
        if candidate.is_reserved:
            return "reserved"
        if candidate.is_private:
            return "private"
        if not candidate.is_global:
            return "reserved"
    return None


def check_address(address: IPAddress, policy: TargetPolicy) -> None:
    if any(address in network for network in policy.allowed_networks):
        return
    kind = refused_kind(address)
    if kind is None or (kind == "loopback" and policy.allow_loopback):
        return
    raise RefusedTarget(kind, f"{address} is a {kind} address")


def check_url(url: str, policy: TargetPolicy) -> tuple[str, str, int]:
    """Scheme, host and port of an acceptable URL, before any resolution."""
    # Parsed by httpx, which sends the deliveries: a URL another parser reads differently
    # (a host IDNA refuses, say) must be refused here, not fail at every delivery.
    try:
        parts = httpx.URL(url)
        host = parts.raw_host.decode("ascii").rstrip(".")
    except (httpx.InvalidURL, UnicodeError):
        raise RefusedTarget("invalid-url", "the URL cannot be parsed") from None
    scheme = parts.scheme
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if scheme not in allowed:
        raise RefusedTarget(
            "scheme", "the URL must be https" + (" or http" if policy.allow_http else "")
        )
    if parts.userinfo:
        raise RefusedTarget("credentials", "the URL must not carry credentials")
    if not host:
        raise RefusedTarget("invalid-url", "the URL has no host")
    if host.lower() in CLOUD_METADATA_NAMES:
        raise RefusedTarget("cloud-metadata", f"{host} is a cloud metadata service")
    return scheme, host, _port(url, parts)


def _port(url: str, parts: httpx.URL) -> int:
    """The port the URL names, or its scheme's; from 1 to 65535, and written in digits.

    httpx reads a port with ``int()``, which takes ``+80``, `` 80``, ``1_0`` and non-ASCII
    digits, and numbers past 65535: the system resolver wraps those around (65616 reaches
    port 80), and one too large for a C long raises an ``OverflowError`` deep inside the
    connection. The port is read again as RFC 3986 writes it (``urllib.parse``: ASCII
    digits only); the two readings must agree.
    """
    default = 443 if parts.scheme == "https" else 80
    port = default if parts.port is None else parts.port
    try:
        split = urlsplit(url)
    except ValueError:
        raise RefusedTarget("invalid-url", "the URL cannot be parsed") from None
    try:
        written = split.port
    except ValueError:  # not ASCII digits, or past 65535
        written = -1
    if not 1 <= port <= 65535 or port != (default if written is None else written):
        raise RefusedTarget("port", "the URL's port must be a number from 1 to 65535")
    return port


def check_target(url: str, policy: TargetPolicy) -> Target:
    """Check the URL and every address its host resolves to; raise ``RefusedTarget`` if not."""
    scheme, host, port = check_url(url, policy)
    try:
        addresses: Sequence[IPAddress] = [ip_address(host)]
    except ValueError:
        addresses = _resolved(host, port, policy)
    else:
        check_address(addresses[0], policy)
    return Target(scheme=scheme, host=host, port=port, addresses=tuple(addresses))


def _resolved(host: str, port: int, policy: TargetPolicy) -> Sequence[IPAddress]:
    """The addresses of a name, all of them acceptable. A refusal names neither the address
    nor whether the name resolved at all: whoever registers a webhook must not learn what
    the service's internal names resolve to, or which of them exist."""
    try:
        addresses = policy.resolver(host, port)
        # Every answer must pass: a name that also resolves to an internal address is
        # refused even if the first answer is public, so that the choice cannot be steered.
        for address in addresses:
            check_address(address, policy)
    except RefusedTarget as refused:
        raise RefusedTarget(refused.kind, f"{host} does not resolve to a public address") from None
    return addresses


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport that checks each request's target and connects to that address.

    The request goes to the checked IP address while the ``Host`` header and TLS server name
    (SNI, and so the certificate check) stay those of the URL's host.
    """

    def __init__(self, policy: TargetPolicy, inner: httpx.BaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = check_target(str(request.url), self.policy)
        address = target.addresses[0]
        request.url = request.url.copy_with(host=str(address))
        if target.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": target.host}
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def delivery_client(settings: Settings, policy: TargetPolicy | None = None) -> httpx.Client:
    """The HTTP client deliveries use: the SSRF guard as transport, no redirects, a timeout."""
    return httpx.Client(
        transport=PinnedTransport(policy or TargetPolicy.from_settings(settings)),
        follow_redirects=False,
        timeout=settings.webhook_timeout_seconds,
        trust_env=False,
    )
