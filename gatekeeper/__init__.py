"""Forge Gatekeeper: verify container images, decide with OPA Rego, record every decision."""

__version__ = "0.1.0"

__all__ = ["__version__"]
