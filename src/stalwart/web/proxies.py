"""Who is on the other end of a request, when a reverse proxy may stand in between.

Headers a client sends can say anything, so ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are
believed only when the peer that sent them is a trusted proxy (``STALWART_TRUSTED_PROXIES``).
The security headers (HSTS), the identity cookie and the sign-in routes (client address,
Secure cookies) all ask here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.datastructures import Headers
from starlette.types import Scope

from stalwart.core.logs import get_logger

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_log = get_logger(__name__)


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["10.0.0.5", "172.16.0.0/12"]`` as networks (a bare address is its own /32 or /128)."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def _address(host: str) -> IPAddress | None:
    """``host`` as an address, an IPv4-mapped IPv6 one as IPv4; None if it is not one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a unix socket path, or a test client's "testclient"
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_in(networks: Sequence[IPNetwork], client: tuple[str, int] | None) -> bool:
    """Whether the connection's peer address (the ASGI ``client``) is in one of ``networks``."""
    if not networks or not client:
        return False
    address = _address(client[0])
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


def forwarded_proto(headers: Headers) -> str:
    """The scheme the nearest proxy reports; with a list (proxies that append), its last one."""
    value = headers.get("x-forwarded-proto", "")
    return value.rsplit(",", 1)[-1].strip().lower()


def peer_address(scope: Scope) -> str:
    """The address of the TCP peer (the proxy, if there is one)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def client_address(scope: Scope, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer's, or from a trusted proxy's ``X-Forwarded-For``.

    The header is read from the right (each proxy appends the address it saw), skipping
    trusted proxies; the first address that is not one is the client. A client can put
    anything at the left of the header, which is why the leftmost entry is never taken.
    """
    peer = peer_address(scope)
    if not peer_in(trusted, (peer, 0)):
        return peer
    forwarded = Headers(scope=scope).get("x-forwarded-for", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not peer_in(trusted, (hop, 0)):
            return hop
    return hops[0] if hops else peer


def is_tls(scope: Scope, trusted: Sequence[IPNetwork]) -> bool:
    """True if the browser's connection is TLS: directly, or as a trusted proxy says."""
    if scope.get("scheme") in ("https", "wss"):
        return True
    return (
        peer_in(trusted, scope.get("client")) and forwarded_proto(Headers(scope=scope)) == "https"
    )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped forms."""
    address = _address(host)
    return address is not None and address.is_loopback


class TrustedProxies:
    """The proxies a middleware believes: given CIDRs, or (None) the running app's settings.

    A middleware is built with the app, before the lifespan has loaded the settings; with None
    the list is read from the running app at the first request.
    """

    def __init__(self, cidrs: Sequence[str] | None) -> None:
        self._networks = None if cidrs is None else parse_networks(cidrs)

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """The trusted proxies' networks."""
        if self._networks is None:
            self._networks = _configured_networks()
        return self._networks

    def is_tls(self, scope: Scope) -> bool:
        """Whether the browser reached us over TLS, directly or through a trusted proxy."""
        return is_tls(scope, self.networks)


def _configured_networks() -> tuple[IPNetwork, ...]:
    from stalwart.bootstrap import current_app

    try:
        return parse_networks(current_app().config.trusted_proxies)
    except Exception as err:
        # Fail closed: without the list no proxy is believed (no HSTS, no Secure flag behind
        # one); nothing else depends on it.
        _log.warning("trusted proxies unavailable; believing none", error=str(err))
        return ()
