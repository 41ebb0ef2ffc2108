"""The ``gatekeeper`` command line (console script ``gatekeeper = gatekeeper.cli:main``).

One module per command group (``commands``, ``policy``, ``exceptions``, ``audit``, ``sbom``),
each thin: parse, call the use case, print with :mod:`~gatekeeper.cli.output`. Shared helpers
live once in :mod:`~gatekeeper.cli.common`, including the one error boundary.
"""

from gatekeeper.cli.root import app, main

__all__ = ["app", "main"]
