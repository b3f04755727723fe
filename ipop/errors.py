"""The two error worlds of ipop (DESIGN.md §3, §12.5).

Misuse of an API by our own code raises :class:`LocalProtocolError`. Bytes a peer sent are never
allowed to raise out of a ``receive_*`` method: parsers raise :class:`RemoteProtocolError`
internally and the receiving core turns it into a drop counted by ``reason``. Configuration
problems raise :class:`ConfigError`, which names the offending key and how to fix it.
"""

from __future__ import annotations


class IpopError(Exception):
    """Base of every error ipop raises on purpose."""


class LocalProtocolError(IpopError):
    """Our own code used an API wrongly (a bug here, not in the peer)."""


class RemoteProtocolError(IpopError):
    """A peer sent bytes we refuse; ``reason`` is the counter name the drop is filed under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ConfigError(IpopError):
    """A configuration or bundle problem: ``key`` is what is wrong, ``fix`` how to mend it."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        msg = f"{key}: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)
        self.key = key
        self.problem = problem
        self.fix = fix
