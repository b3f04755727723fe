"""What the tests of the kept tables share (``ipop.tools.classcache``, ``ipop.tools.recache``):
building a table in a clean interpreter, as a daemon's first start does, and putting this
process's own table back after a test replaced it. Tests only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

__all__ = ["KeptModule", "build_in_clean_interpreter", "reinstalled"]


class KeptModule(Protocol):
    def install(self, path: Path | None = None) -> None: ...
    def uninstall(self) -> None: ...


def build_in_clean_interpreter(module: str, table: Path, imports: str) -> None:
    """Import ``imports`` in a fresh interpreter with ``module``'s table at ``table``, and save
    what they built there (the test fails with that interpreter's stderr if it could not)."""
    script = (
        f"import sys; from pathlib import Path; import {module} as kept; "
        "kept.uninstall(); kept.install(Path(sys.argv[1])); "
        f"import {imports}; "
        "sys.exit(0 if kept.save(Path(sys.argv[1]), force=True) else 1)"
    )
    build = subprocess.run(
        [sys.executable, "-c", script, str(table)], capture_output=True, text=True, timeout=120
    )
    assert build.returncode == 0, build.stderr


def reinstalled(module: KeptModule) -> Iterator[None]:
    """A fixture's body: after the test, ``module``'s table is this process's real one again."""
    yield
    module.uninstall()
    module.install()
