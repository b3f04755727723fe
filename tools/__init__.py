"""Composition roots and command-line tools. Nothing imports from here.

Each tool is a program of its own, and this package is imported before any of its modules:
here it routes the regular expressions the program compiles through :mod:`ipop.tools.recache`
and the dataclasses it creates through :mod:`ipop.tools.classcache` (their compiled code kept
between runs: a third of a daemon's import CPU). recache first: classcache's own imports
(dataclasses, inspect) compile patterns.
"""

from ipop.tools import recache

recache.install()

from ipop.tools import classcache  # noqa: E402

classcache.install()


def save_tables(*, force: bool = False) -> None:
    """Write both tables if this program compiled entries they lacked (after its imports: the
    next start finds them); ``force``: even with bytecode writing off (the lab, a package
    build)."""
    recache.save(force=force)
    classcache.save(force=force)
