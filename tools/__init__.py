"""Composition roots and command-line tools. Nothing imports from here.

Each tool is a program of its own, and this package is imported before any of its modules:
here it routes the dataclasses the program creates through :mod:`ipop.tools.classcache`
(their methods' compiled code kept between runs: a third of a daemon's import CPU).
"""

from ipop.tools import classcache

classcache.install()
