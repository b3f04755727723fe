"""Composition roots and command-line tools. Nothing imports from here."""
