"""A small adapter to the Kubernetes API server (httpx, bearer token), for the chart's hook Jobs:
register/unregister the webhook configurations and keep the generated serving certificate.

Nothing here reads the environment: the CLI passes the API server URL, the token file and the
CA file (in a Pod: the service-account mount, see :mod:`gatekeeper.cli.kube`).
"""

from gatekeeper.kube.client import KubeApiError, KubeClient

__all__ = ["KubeApiError", "KubeClient"]
