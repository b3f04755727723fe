"""Name rules: network names, fixed hostnames, node names (shared with bundle.py and
ipop-config).

A network name is one DNS-label-like token (it appears in URIs and DHT keys); a fixed hostname
is one DNS label not shaped like an address name (``c064001002``); a node name is the
certificate CN and the bundle's file name. Each ``validate_*`` returns the name or raises
:class:`~ipop.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import re

from ipop.errors import ConfigError

__all__ = ["LABEL_RE", "validate_hostname", "validate_network", "validate_node_name"]

# A DNS label: what a hostname must be to become <hostname>.<dns suffix>.
LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# "c064001002" is the always-resolvable name of 100.64.1.2 (DNS is case-insensitive), so a
# fixed hostname of that shape would shadow or be shadowed by an address name.
_ADDRESS_NAME_RE = re.compile(r"^c[0-9]{9}$")
# Node names become certificate CNs and file names (NAME.bundle.toml): no slashes, no spaces.
_NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def validate_network(network: str, *, key: str = "network") -> str:
    """A network name: one DNS-label-like token (it appears in URIs and DHT keys)."""
    if not isinstance(network, str) or not LABEL_RE.match(network):
        raise ConfigError(
            key,
            f"{network!r} is not a valid network name",
            "use 1-63 lowercase letters, digits and inner hyphens, e.g. 'lab-net'",
        )
    return network


def validate_hostname(hostname: str, *, key: str = "hostname") -> str:
    """A fixed hostname: one DNS label that is not shaped like an address name (c064001002)."""
    fix = "use 1-63 lowercase letters, digits and inner hyphens, e.g. 'alice-laptop'"
    if not isinstance(hostname, str) or not LABEL_RE.match(hostname):
        raise ConfigError(key, f"{hostname!r} is not a valid hostname label", fix)
    if _ADDRESS_NAME_RE.match(hostname):
        raise ConfigError(
            key, f"{hostname!r} would collide with the address names C<9 digits>", fix
        )
    return hostname


def validate_node_name(name: str, *, key: str = "name") -> str:
    """A node name: the certificate CN and the bundle's file name."""
    if not isinstance(name, str) or not _NODE_NAME_RE.match(name):
        raise ConfigError(
            key,
            f"{name!r} is not a valid node name",
            "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name
