"""Take over the export chain of a provider that the SDK's auto-configuration built.

``opentelemetry-instrument`` with ``opentelemetry-distro`` installed runs
the SDK's configurator before any instrumentor: it builds an SDK
``TracerProvider`` with one batch processor per exporter named in
``OTEL_TRACES_EXPORTER`` and sets it as the global provider, which can be
set only once. jobtrace's instrumentors run after that and cannot build a
provider of their own any more.

So jobtrace keeps that provider and its exporters, and puts its own
processors in front of them: the span pipe of forked children, the span
budget with its partial flushes, and the resource attributes. The SDK has
no public API to remove a processor, so this replaces the contents of the
provider's processor list, which the SDK has kept in
``_active_span_processor._span_processors`` since 1.0 (checked in 1.27 and
1.45). When that list has another shape, nothing changes and the caller
uses the provider as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from jobtrace import _delivery

log = logging.getLogger(__name__)

_Wrapped = TypeVar("_Wrapped", bound=SpanProcessor)

#: Resource attribute that the SDK's configurator sets when
#: ``opentelemetry-instrument`` started the process.
AUTO_VERSION_ATTRIBUTE = "telemetry.auto.version"

_MAX_RESOURCES = 16


class ResourceProcessor(SpanProcessor):
    """A span processor that adds resource attributes to each ended span.

    Tracers that other instrumentations and module-level code got from the
    provider before jobtrace took it over keep the provider's first
    resource, so the attributes are merged into each span's resource on
    its way to the exporters. The merge keeps the span's other resource
    attributes, such as the instance id that the SDK gives a forked child.
    """

    def __init__(self, processor: SpanProcessor, extra: Resource) -> None:
        self.processor = processor
        self._extra = extra
        # Merged resources by id of the original, which the entry keeps
        # alive. A worker's spans carry a few resources: its tracers' and
        # the one its children's spans are decoded with.
        self._merged: dict[int, tuple[Resource, Resource]] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        original = span.resource
        found = self._merged.get(id(original))
        if found is None:
            if len(self._merged) >= _MAX_RESOURCES:
                self._merged.clear()
            found = (original, original.merge(self._extra))
            self._merged[id(original)] = found
        # ReadableSpan has no setter for its resource.
        span._resource = found[1]
        self.processor.on_end(span)

    def shutdown(self) -> None:
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)


def built_by_auto_configuration(provider: TracerProvider) -> bool:
    """Return whether the SDK's configurator for opentelemetry-instrument built it."""
    return AUTO_VERSION_ATTRIBUTE in provider.resource.attributes


def take_over(
    provider: TracerProvider,
    wrap: Callable[[SpanProcessor], _Wrapped],
) -> _Wrapped | None:
    """Replace the provider's processors with ``wrap`` applied to them.

    Returns the new processor, or None when the provider's processor list
    is not the SDK's synchronous list.
    """
    active = getattr(provider, "_active_span_processor", None)
    if type(active) is not SynchronousMultiSpanProcessor:
        log.warning(
            "jobtrace cannot add its span processors to the provider that "
            "opentelemetry-instrument built, so the span budget is off"
        )
        return None

    # The configurator's batch processors move below jobtrace's chain, so
    # every span still reaches the exporters the OTEL_* variables chose.
    # Each batch processor gets the queue guard that jobtrace's own has, so
    # bursts of spans from forked children wait for room in its queue.
    with active._lock:
        below = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        for processor in active._span_processors:
            if isinstance(processor, BatchSpanProcessor):
                processor = _delivery.CountingProcessor(processor)
            below.add_span_processor(processor)
        wrapped = wrap(below)
        active._span_processors = (wrapped,)
    return wrapped
