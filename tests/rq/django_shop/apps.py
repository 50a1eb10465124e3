"""The test app's configuration, which instruments RQ when Django starts."""

from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    """Instrument RQ in every process that starts Django."""

    name = "tests.rq.django_shop"

    def ready(self) -> None:
        import jobtrace_rq

        jobtrace_rq.instrument()
