"""Composition roots and command-line tools. Nothing imports from here.

Each tool is a program of its own, and this package is imported before any of its modules:
here it routes the regular expressions the program compiles through :mod:`ipop.tools.recache`
and the dataclasses it creates through :mod:`ipop.tools.classcache` (their compiled code kept
between runs: a third of a daemon's import CPU). recache first: classcache's own imports
(dataclasses, inspect) compile patterns.

A daemon (ipopd, ipop-router) imports with the cyclic garbage collector off, and
:func:`imports_done` turns it on again with what the imports made frozen (:func:`gc.freeze`):
the ~300 modules' classes, functions and tables are tens of thousands of objects that live as
long as the process, and the collector ran ~80 times over them during the imports (12 ms of a
~0.19 CPU s start in a 32-daemon cold start: issue 14) and would scan them again in every full
collection after. The cost: the few cyclic leftovers of the imports are never freed (~0.2 MB).
"""

import gc
import os
import sys

# The daemons' programs, as ``python -m`` names them and as their console scripts are called.
DAEMON_MODULES = ("ipop.tools.ipopd", "ipop.tools.routerd")
DAEMON_SCRIPTS = ("ipopd", "ipop-router")


def starting_daemon(orig_argv: list[str], argv0: str) -> bool:
    """Is this interpreter's command line a daemon's (``sys.orig_argv``, ``sys.argv[0]``)?"""
    if "-m" in orig_argv[1:]:
        i = orig_argv.index("-m", 1)
        return orig_argv[i + 1 : i + 2] in ([m] for m in DAEMON_MODULES)
    return os.path.basename(argv0) in DAEMON_SCRIPTS


# Set when this package turned the collector off; imports_done turns it on again.
_gc_deferred = starting_daemon(sys.orig_argv, sys.argv[0] if sys.argv else "") and gc.isenabled()
if _gc_deferred:
    gc.disable()

from ipop.tools import recache  # noqa: E402

recache.install()

from ipop.tools import classcache  # noqa: E402

classcache.install()


def save_tables(*, force: bool = False) -> None:
    """Write both tables if this program compiled entries they lacked (after its imports: the
    next start finds them); ``force``: even with bytecode writing off (the lab, a package
    build)."""
    recache.save(force=force)
    classcache.save(force=force)


def imports_done() -> None:
    """A daemon's imports are done: keep what they compiled (:func:`save_tables`), and collect
    garbage from now on, leaving out what the imports made (see the module docstring)."""
    global _gc_deferred
    save_tables()
    if _gc_deferred:
        _gc_deferred = False
        gc.freeze()
        gc.enable()
