"""A recording stand-in for ``resolvectl`` (:data:`ipop.aio.sysdns.CommandRunner`): it keeps
every command it is given and fails the ones a test names, as resolvectl would (status 1 and
a line on stderr)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["RecordingRunner"]


class RecordingRunner:
    """Records argv lists; ``fail``: the resolvectl verbs (``"domain"``) that fail."""

    def __init__(self, *, fail: Sequence[str] = ()) -> None:
        self.commands: list[list[str]] = []
        self.fail = set(fail)

    async def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.commands.append(list(argv))
        if len(argv) > 1 and argv[1] in self.fail:
            return 1, f"Failed to set {argv[1]} configuration: Link {argv[2]} not known"
        return 0, ""

    def verbs(self) -> list[str]:
        """The verb of each command so far (``revert``, ``dns`` …), in order."""
        return [argv[1] for argv in self.commands]
