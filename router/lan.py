"""The router's LAN side: one AF_PACKET socket bound to the LAN interface (a bridge or a NIC).

The data plane reads and writes whole Ethernet frames on its fd exactly as on a TAP. Only
frames the interface itself receives arrive (to its MAC, broadcast, multicast: it is not put
in promiscuous mode), so LAN-to-LAN unicast stays on the LAN; our own transmissions are not
looped back (``PACKET_IGNORE_OUTGOING``).
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from ipop.errors import ConfigError

__all__ = ["LanSocket"]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23


class LanSocket:
    def __init__(self, ifname: str) -> None:
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except OSError as exc:
            raise ConfigError(
                "router.interface", f"cannot open a packet socket: {exc}", "run as root"
            ) from exc
        try:
            with contextlib.suppress(OSError):  # older kernels: we only lose a filter
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.sock.bind((ifname, ETH_P_ALL))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(
                "router.interface", f"cannot bind to {ifname!r}: {exc}", "name an existing LAN"
            ) from exc
        self.sock.setblocking(False)
        self.name = ifname
        self.fd = self.sock.fileno()
        self.mac: bytes = bytes(self.sock.getsockname()[4][:6])
        # Router solicitations and the like would only be counted drops.
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")

    def close(self) -> None:
        self.sock.close()
