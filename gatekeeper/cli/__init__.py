"""The ``gatekeeper`` command line (console script ``gatekeeper = gatekeeper.cli:main``).

One module per command group (``commands``, ``policy``, ``exceptions``, ``audit``, ``sbom``),
each thin: parse, call the use case, print with :mod:`~gatekeeper.cli.output`. Shared helpers
live once in :mod:`~gatekeeper.cli.common`, including the one error boundary.
"""

import sys

# httpx's package __init__ imports httpx's own command line (click, rich, pygments: ~45 ms of a
# 0.3 s ``gatekeeper verify``) and falls back to a stub when that import fails. The gatekeeper
# never runs httpx's command line, so its process skips it (a None entry makes the import fail).
if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]

from gatekeeper.cli.root import app, main  # noqa: E402

__all__ = ["app", "main"]
