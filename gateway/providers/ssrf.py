"""The SSRF policy for provider URLs: which addresses the gateway may call with a provider key.

Checked twice: when an admin saves or tests a base URL (check_url), and on the address each
connection really goes to (check_address, from transport's connection class), so DNS that
changes its answer later cannot slip past. Some ranges are refused whatever the settings say:
cloud metadata, link-local and the like, also when written in another encoding or embedded in
an IPv6 address. Loopback and private ranges need ALLOW_PRIVATE_UPSTREAMS (self-hosted models).
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NEVER = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",            # "this network": 0.0.0.0 reaches the gateway's own host
    "169.254.0.0/16",       # link-local: AWS, GCP, Azure, Oracle, DigitalOcean metadata
    "100.64.0.0/10",        # carrier-grade NAT; Alibaba Cloud's metadata is 100.100.100.200
    "224.0.0.0/4",          # multicast
    "240.0.0.0/4",          # reserved, and the broadcast address
    "::/128",
    "fe80::/10",            # link-local
    "fec0::/10",            # site-local (deprecated)
    "ff00::/8",             # multicast
    "fd00:ec2::/32",        # AWS's IPv6 metadata, time and pod-identity endpoints
))
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPATIBLE = ipaddress.ip_network("::/96")          # deprecated ::a.b.c.d
_V4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT ::ffff:0:a.b.c.d


class BlockedAddress(OSError):
    """The provider URL resolves to an address the SSRF policy forbids."""


def embedded_ipv4(addr: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, NAT64, 6to4, Teredo, ...)."""
    if addr.version == 4:
        return []
    found = [a for a in (addr.ipv4_mapped, addr.sixtofour) if a is not None]
    if addr.teredo:
        found.extend(addr.teredo)       # (server, client); the client is the one reached
    low32 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if any(addr in n for n in _NAT64) or addr in _V4_TRANSLATED:
        found.append(low32)
    elif addr in _V4_COMPATIBLE and int(addr) > 1:     # not :: or ::1
        found.append(low32)
    return found


def check_address(ip: str, allow_private: bool) -> None:
    """Raise BlockedAddress unless `ip` may be called: never metadata, link-local and the other
    NEVER ranges, also as an IPv4 address inside an IPv6 one; loopback, private and other
    non-global ranges only when the admin allowed them."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    candidates = [addr, *embedded_ipv4(addr)]
    for a in candidates:
        if any(a in n for n in NEVER if n.version == a.version):
            raise BlockedAddress(f"address {addr} is never allowed as an upstream "
                                 "(cloud metadata, link-local or reserved)")
    reached = candidates[1:] or candidates      # an embedded IPv4 address is where it goes
    if not allow_private and not all(a.is_global for a in reached):
        raise BlockedAddress(f"address {addr} is private; set GATEWAY_ALLOW_PRIVATE_UPSTREAMS=1 to allow it")


def literal_address(host: str) -> Address | None:
    """The address a host name spells without DNS, in any form resolvers accept:
    dotted, decimal (2852039166), hex (0xA9FEA9FE), octal (0251.0376.0251.0376), short (169.254.43518)."""
    host = host[:-1] if host.endswith(".") else host        # the root label: same host
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    if not host or any(c.isspace() for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))     # the C resolver's own reading
    except OSError:
        return None


def check_url(url: str, allow_private: bool) -> None:
    """Validate an admin-supplied base URL now (the connect-time check stays authoritative);
    raise ValueError saying why it is refused."""
    parts = urlsplit(url)
    if parts.scheme == "mock":
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the base URL must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("put credentials in the API key field, not in the URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("the base URL has an invalid port") from None
    addresses: list[str] = []
    literal = literal_address(parts.hostname)
    if literal is not None:
        addresses.append(str(literal))
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        addresses.extend(info[4][0] for info in infos)
    except (socket.gaierror, UnicodeError):
        pass        # may resolve later (DNS not ready); checked again at connect time
    for ip in addresses:
        try:
            check_address(ip, allow_private)
        except BlockedAddress as e:
            raise ValueError(str(e)) from None


def display_url(url: str) -> str:
    """`url` without user info, query or fragment: what an audit row or a log line may hold."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else url[:200]
