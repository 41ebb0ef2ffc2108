"""Why a package of a candidate would do nothing: the explanations ``policy check`` gives.

Rego copied from OPA Gatekeeper or conftest compiles and passes its own tests, and then never
denies anything here, without a warning: its rules are in the wrong package, are named
``violation`` instead of ``deny``, or answer ``{"msg": ...}`` where the gatekeeper reads a
string or ``{"image": ..., "message": ...}``. The gatekeeper reads:

* ``deny`` / ``warn`` (and ``prefilter``) of ``data.gatekeeper.rules.<name>``;
* ``violation`` of ``data.gatekeeper.templates.<template>`` for each constraint of
  ``data.gatekeeper.config.constraints`` naming that template (``policies/main.rego``).

The checks read the Rego source (rule heads at the start of a line, as ``opa fmt`` writes
them) and the candidate's root ``data.json``; each finding names the package and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

__all__ = ["inert_package_problems"]

_PACKAGE = re.compile(r"^package\s+([A-Za-z0-9_.]+)", re.MULTILINE)


def _defines(source: str, rule: str) -> bool:
    return re.search(rf"^{rule}(\s+contains\b|\s*\[|\s*:?=|\s+if\b|\s*\{{)", source,
                     re.MULTILINE) is not None


_MSG_SHAPED = re.compile(r'^(deny|warn)(\s+contains\s+|\s*\[)\{\s*"msg"\s*:', re.MULTILINE)

_FIX_TEMPLATE = ("move the template's Rego to package gatekeeper.templates.<template> and add a "
                 "constraint naming it to data gatekeeper.config.constraints")


def _sources(policies: Mapping[str, bytes]) -> dict[str, list[tuple[str, str]]]:
    """package -> [(file, source)] of the policy files (tests excluded)."""
    by_package: dict[str, list[tuple[str, str]]] = {}
    for name, content in sorted(policies.items()):
        if not name.endswith(".rego") or name.endswith("_test.rego"):
            continue
        source = content.decode(errors="replace")
        match = _PACKAGE.search(source)
        if match:
            by_package.setdefault(match.group(1), []).append((name, source))
    return by_package


def _constraints(policies: Mapping[str, bytes]) -> list[Mapping[str, Any]] | None:
    """``gatekeeper.config.constraints`` of the root data.json, or None when unreadable."""
    for name, content in policies.items():
        if PurePosixPath(name) != PurePosixPath("data.json"):
            continue
        try:
            document = json.loads(content)
            found = document["gatekeeper"]["config"].get("constraints", [])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return [c for c in found if isinstance(c, Mapping)] if isinstance(found, list) else None
    return []


def inert_package_problems(policies: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """``(file, explanation)`` for every package (or constraint) that could never decide."""
    problems: list[tuple[str, str]] = []
    by_package = _sources(policies)
    constraints = _constraints(policies)
    named = {str(c.get("template")) for c in constraints or []}
    for package, files in sorted(by_package.items()):
        source = "\n".join(text for _, text in files)
        first = files[0][0]
        rules = {rule for rule in ("deny", "warn", "prefilter", "violation")
                 if _defines(source, rule)}
        if package == "gatekeeper.main":
            continue
        if package.startswith("gatekeeper.rules."):
            if "violation" in rules and not rules & {"deny", "warn"}:
                problems.append((first, (
                    f"package {package} is inert: it defines violation (OPA Gatekeeper style) "
                    f"but the gatekeeper reads deny and warn of gatekeeper.rules.*; "
                    f"{_FIX_TEMPLATE}")))
            elif not rules:
                problems.append((first, (
                    f"package {package} is inert: it defines no deny or warn rule")))
            if _MSG_SHAPED.search(source):
                problems.append((first, (
                    f'package {package}: items shaped {{"msg": ...}} are not findings here '
                    f'(no "message", no "policy"): answer a string or {{"image": ..., '
                    f'"message": ...}}, or, for a Gatekeeper template, {_FIX_TEMPLATE}')))
        elif package.startswith("gatekeeper.templates."):
            template = package.removeprefix("gatekeeper.templates.")
            if "." in template:
                problems.append((first, (
                    f"package {package} is inert: a template is package "
                    f"gatekeeper.templates.<template> (one segment)")))
            elif "violation" not in rules:
                problems.append((first, (
                    f"template package {package} is inert: it defines no violation rule "
                    f'(violation contains {{"msg": msg}} if ...)')))
            elif constraints is not None and template not in named:
                problems.append((first, (
                    f"template package {package} is inert: no constraint in data "
                    f'gatekeeper.config.constraints names template "{template}"')))
        elif rules:
            rule_list = ", ".join(sorted(rules))
            problems.append((first, (
                f"package {package} is inert: it defines {rule_list}, but the gatekeeper "
                f"reads only deny/warn of gatekeeper.rules.<name> and violation of "
                f"gatekeeper.templates.<template>"
                + (f"; {_FIX_TEMPLATE}" if "violation" in rules else
                   "; rename it package gatekeeper.rules.<name>"))))
    templates = {p.removeprefix("gatekeeper.templates.") for p in by_package
                 if p.startswith("gatekeeper.templates.")}
    for constraint in constraints or []:
        wanted = constraint.get("template")
        if wanted not in templates:
            problems.append(("data.json", (
                f"constraint {constraint.get('name', '?')} is inert: it names template "
                f"{json.dumps(wanted)} but no package gatekeeper.templates."
                f"{wanted} is loaded")))
    return problems
