"""OpenTelemetry tracing: the SDK, the OTLP exporter and the HTTP instrumentation.

Off unless ``GATEKEEPER_TRACING_OTLP_ENDPOINT`` is set. The use cases only use the
OpenTelemetry *API* (a tracer handed to them); this module, used by the composition root and
the app, owns the SDK: a tracer provider of our own (never the process-global one, so several
apps in one process, as in tests, do not share exporters), OTLP/HTTP export in a batch, and a
parent-based ratio sampler, so a pipeline's sampled ``traceparent`` is always followed.

Spans of one decision: ``gatekeeper.decision`` (attributes ``intent_id``, ``plan_id``,
``ticket_id``, ``deploy_id``, ``gatekeeper.decision_id``, ``gatekeeper.verdict``, ...), with
children ``gatekeeper.evidence.<step>`` per image and step, ``gatekeeper.policy.opa`` and
``gatekeeper.audit.write``; under the HTTP server span of the request when the REST API
answered it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

__all__ = ["Tracing", "build_tracing"]

log = logging.getLogger(__name__)

_INSTRUMENTATION = "gatekeeper"


@dataclass
class Tracing:
    """The tracer the service uses, and the provider behind it (None: tracing is off)."""

    tracer: trace.Tracer
    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def instrument_app(self, app: Any) -> None:
        """Server spans for the REST API; continues a caller's W3C ``traceparent``."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, excluded_urls="healthz,readyz,docs,openapi.json"
        )

    def instrument_asgi(
        self, app: Any, span_details: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
    ) -> Any:
        """``app`` with the same server spans (a raw ASGI app: the lean admission path);
        ``span_details(scope)`` names a request's span and gives its attributes."""
        if self.provider is None:
            return app
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(
            app, tracer_provider=self.provider, default_span_details=span_details)

    def instrument_http_client(self, client: Any) -> None:
        """Client spans for an httpx client (registry round trips), children of the evidence
        step that made them; the W3C context travels with the request."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def flush(self, timeout_millis: int = 5000) -> bool:
        return self.provider.force_flush(timeout_millis) if self.provider else True

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def build_tracing(
    endpoint: str | None, *, service_name: str, sample_ratio: float, version: str
) -> Tracing:
    """Tracing for the settings; ``endpoint`` is the OTLP/HTTP base URL (``.../v1/traces`` is
    appended unless given)."""
    if not endpoint:
        return Tracing(trace.NoOpTracer())
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": version}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=5)))
    log.info("tracing: OTLP/HTTP to %s as %s (sampling %.0f%% of new traces)",
             url, service_name, sample_ratio * 100)
    return Tracing(provider.get_tracer(_INSTRUMENTATION, version), provider)
