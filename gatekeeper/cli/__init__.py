"""The ``gatekeeper`` command line (console script ``gatekeeper = gatekeeper.cli:main``).

One module per command group; they parse, call the service, print and exit with a code.
"""

from gatekeeper.cli.commands import app, main

__all__ = ["app", "main"]
