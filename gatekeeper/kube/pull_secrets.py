"""The workload's registry credentials: its ``imagePullSecrets`` (off by default).

The kubelet pulls a Pod's images with the Pod's ``imagePullSecrets``; the API server's
ServiceAccount admission copies the ServiceAccount's ones into every Pod it creates. For a
workload with a pod template (a Deployment...), the template's own secrets are read, then those
of its ServiceAccount (``spec.serviceAccountName``, else ``default``).

Only the named ``kubernetes.io/dockerconfigjson`` Secrets are read, once per evaluation; their
content is never logged, recorded or cached (see :mod:`gatekeeper.domain.credentials`). It needs
``get`` of ``secrets`` (and of ``serviceaccounts`` for templates) in the governed namespaces:
a cluster-wide read of secrets is why it is opt-in (``background_pull_secrets``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from gatekeeper.domain.credentials import WorkloadRegistryLogins
from gatekeeper.domain.ports.registry import CredentialProvider
from gatekeeper.domain.workload_images import find_pod_specs
from gatekeeper.errors import ConfigurationError, GatekeeperError
from gatekeeper.kube.client import KubeApiError, KubeClient
from gatekeeper.kube.workloads import Workload, read_pull_secret

__all__ = ["DockerConfigReader", "KubePullSecrets", "pull_secret_names"]

log = logging.getLogger(__name__)
_MAX_SECRETS = 16  # a pod spec naming more is unusual; bounded work per evaluation


def _names(entries: Any) -> list[str]:
    names: list[str] = []
    for entry in entries or ():
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def pull_secret_names(workload: Workload) -> tuple[list[str], str | None]:
    """The secrets the pod spec names, and the ServiceAccount to read more from (templates
    only: a stored Pod already carries its ServiceAccount's secrets)."""
    names: list[str] = []
    account: str | None = None
    for _, spec in find_pod_specs(workload.obj, workload.kind):
        names += [n for n in _names(spec.get("imagePullSecrets")) if n not in names]
        if workload.kind != "Pod":
            value = spec.get("serviceAccountName")
            account = value if isinstance(value, str) and value else "default"
    return names, account


#: Reads a ``.dockerconfigjson`` document (``{"auths": {...}}``) into credentials; raises
#: :class:`~gatekeeper.errors.ConfigurationError` when malformed. The composition root passes
#: :class:`gatekeeper.registry.auth.DockerConfigCredentials`.
DockerConfigReader = Callable[[Mapping[str, Any]], CredentialProvider]


class KubePullSecrets:
    """Reads the named pull secrets of a workload through the API server, per evaluation (the
    :class:`~gatekeeper.domain.ports.compliance.PullSecretSource` of the background door)."""

    def __init__(self, client: KubeClient, docker_config: DockerConfigReader) -> None:
        self._client = client
        self._docker_config = docker_config

    def _account_secrets(self, namespace: str, account: str) -> list[str]:
        try:
            found = self._client.get(
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}")
        except KubeApiError as exc:
            log.warning("ServiceAccount %s/%s not readable (HTTP %s): its imagePullSecrets "
                        "are not used", namespace, account, exc.status)
            return []
        return _names((found or {}).get("imagePullSecrets"))

    def logins_for(self, workload: Workload) -> tuple[WorkloadRegistryLogins | None, list[str]]:
        """The logins, and a problem per secret that could not be used (names, no content)."""
        names, account = pull_secret_names(workload)
        if account is not None:
            names += [n for n in self._account_secrets(workload.namespace, account)
                      if n not in names]
        problems: list[str] = []
        auths: dict[str, Any] = {}
        used: list[str] = []
        for name in names[:_MAX_SECRETS]:
            try:
                found = read_pull_secret(self._client, workload.namespace, name)
            except GatekeeperError as exc:
                problems.append(exc.message)
                continue
            for host, entry in found.items():
                auths.setdefault(host, entry)  # the first secret naming a host wins (kubelet)
            used.append(f"{workload.namespace}/{name}")
        if not auths:
            return None, problems
        try:
            provider = self._docker_config({"auths": auths})
        except ConfigurationError as exc:
            return None, [*problems, f"pull secrets of {workload.key}: {exc.message}"]

        def lookup(host: str) -> tuple[str, str] | None:
            found = provider.credentials_for(host)
            return (found.username, found.password) if found is not None else None

        return WorkloadRegistryLogins(lookup, "pull secrets " + ", ".join(used)), problems
