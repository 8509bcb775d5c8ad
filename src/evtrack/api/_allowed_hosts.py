"""Which ``Host`` (and ``Origin``) names a request may carry: the guard against DNS rebinding.

In a DNS-rebinding attack a page on ``evil.example`` makes its own name resolve to the
victim's evtrack (``127.0.0.1`` or an address on the office network) and then calls the API
from the browser as a same-origin page. The browser still sends ``Host: evil.example``, so a
server that answers only the names it is known by cannot be reached that way. MLflow's server
refuses such requests with 403 since 3.x (``--allowed-hosts``); evtrack does the same.

Entries are ``host`` (any port), ``host:port``, ``*.example.com`` (any subdomain, any port,
not ``example.com`` itself), ``*.example.com:8443``, bracketed IPv6 ``[::1]`` /
``[::1]:5000``, or ``*`` (every name: no check). Names compare case-insensitively and
without a trailing dot.

The default depends on the address the server is bound to (see :func:`default_allowed_hosts`):
on loopback only the loopback names; on any other address also every IP literal (a browser
that sends ``Host: 10.1.2.3`` was pointed at that address, which no attacker's name can make
it do) and the machine's own names. A server reached through a DNS name needs that name in
``--allowed-hosts``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class HostPatternError(ValueError):
    """An ``--allowed-hosts`` entry that is not a host, ``host:port``, ``*.domain`` or ``*``."""


def split_host(value: str) -> tuple[str, int | None] | None:
    """``("name", port)`` from a ``Host`` header or an origin's authority, lower-cased,
    IPv6 kept in brackets; ``None`` when it is not a well-formed host."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/@?# \t"):
        return None
    port: int | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = _port(rest[1:])
            if port is None:
                return None
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None
        return name, port
    if value.count(":") > 1:  # a bare IPv6 address, as a flag may spell it
        try:
            return f"[{ipaddress.IPv6Address(value)}]", None
        except ValueError:
            return None
    name, sep, port_text = value.partition(":")
    if sep:
        port = _port(port_text)
        if port is None:
            return None
    name = name.rstrip(".")
    if not name:
        return None
    return name, port


def _port(text: str) -> int | None:
    if not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Pattern:
    name: str  # "example.com", or ".example.com" for "*.example.com"
    port: int | None  # None: any port

    def matches(self, name: str, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.name.startswith("."):
            return name.endswith(self.name) and len(name) > len(self.name)
        return name == self.name


def parse_pattern(entry: str) -> _Pattern:
    text = entry.strip().lower()
    wildcard = text.startswith("*.")
    parsed = split_host(text[1:] if wildcard else text)
    if parsed is None or "*" in parsed[0] or (wildcard and parsed[0].startswith("[")):
        raise HostPatternError(
            f"not a host pattern: {entry!r} (use a name, name:port, *.domain or *)"
        )
    name, port = parsed
    return _Pattern(name, port)


@dataclass(frozen=True)
class AllowedHosts:
    """An allow-list of host names; ``any_host`` when it contains ``*``."""

    patterns: tuple[_Pattern, ...]
    any_host: bool = False
    any_ip_literal: bool = False
    description: str = ""

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        """The list an operator gave (``--allowed-hosts``); raises :class:`HostPatternError`."""
        listed = [e.strip() for e in entries if e.strip()]
        if "*" in listed:
            return cls((), any_host=True, description="*")
        return cls(tuple(parse_pattern(e) for e in listed), description=",".join(listed))

    def allows(self, host: str | None) -> bool:
        """Whether a ``Host`` header value (``name[:port]``) is on the list."""
        if self.any_host:
            return True
        parsed = split_host(host or "")
        if parsed is None:
            return False
        name, port = parsed
        if self.any_ip_literal and is_ip_literal(name):
            return True
        return any(p.matches(name, port) for p in self.patterns)


def is_loopback(bind_host: str) -> bool:
    if bind_host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(bind_host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str) -> AllowedHosts:
    """The allow-list when the operator gave none.

    Bound to loopback: ``localhost``, ``127.0.0.1``, ``[::1]`` and the bound address, any port.
    Bound elsewhere (``0.0.0.0``, a LAN address, a name): those, plus any IP literal, the
    bound name and this machine's host name. DNS names clients use to reach the server
    (``mlflow.example.com``) must be listed with ``--allowed-hosts``.
    """
    names = list(LOOPBACK_NAMES)
    bound = split_host(bind_host)
    wildcard_bind = bind_host.strip() in ("", "0.0.0.0", "::", "[::]")
    if bound is not None and not wildcard_bind:
        names.append(bound[0])
    if is_loopback(bind_host):
        patterns = tuple(parse_pattern(n) for n in dict.fromkeys(names))
        return AllowedHosts(patterns, description="loopback names (default)")
    machine = socket.gethostname().strip().lower()
    if machine and split_host(machine) is not None:
        names.append(machine)
    patterns = tuple(parse_pattern(n) for n in dict.fromkeys(names))
    return AllowedHosts(
        patterns,
        any_ip_literal=True,
        description=f"loopback names, IP literals, {', '.join(names[3:]) or 'no names'} (default)",
    )


__all__ = [
    "AllowedHosts",
    "HostPatternError",
    "default_allowed_hosts",
    "is_loopback",
    "split_host",
]
