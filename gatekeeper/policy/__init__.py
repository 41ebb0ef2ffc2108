"""Policy engine adapters (OPA)."""

from gatekeeper.policy.embedded import EmbeddedOpa
from gatekeeper.policy.opa import OpaPolicyEngine

__all__ = ["EmbeddedOpa", "OpaPolicyEngine"]
