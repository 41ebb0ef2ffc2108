"""The core (domain, service) uses the OpenTelemetry API only; the SDK stays in the adapters.

import-linter cannot forbid a subpackage of an external package, so this reads the imports.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "gatekeeper"
CORE = [PACKAGE / "service.py", *sorted((PACKAGE / "domain").glob("*.py"))]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_core_imports_only_the_opentelemetry_api() -> None:
    offending = {
        f"{path.name}: {name}"
        for path in CORE
        for name in _imported_modules(path)
        if name.startswith("opentelemetry") and name not in ("opentelemetry", "opentelemetry.trace")
    }
    assert offending == set()
    assert "opentelemetry.trace" in _imported_modules(PACKAGE / "service.py")
