"""The ``searchcore`` command line, one module per command group.

``main`` assembles them (``searchcore = "searchcore.cli:main"``); ``common`` holds what the
groups share. The package imports the core, and nothing in the core imports it.
"""

from searchcore.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
