"""Unit tests of the checks behind ``jobtrace doctor``."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from jobtrace._doctor import (
    _config,
    _endpoint,
    _hosts,
    _masking,
    _processes,
    _sdk,
    _tracers,
    collect,
    render,
)
from jobtrace._doctor._finding import Finding
from jobtrace._hosts import host_version
from jobtrace._receiver import Fault, OtlpReceiver


class TestMasking:
    """Secrets never reach the report."""

    def test_header_values(self) -> None:
        """Header variables keep their keys and lose every value."""
        masked = _masking.mask_variable(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-honeycomb-team=abc, dataset=d"
        )

        assert masked == "x-honeycomb-team=***,dataset=***"

    def test_url_password(self) -> None:
        """A URL keeps its user name and loses its password."""
        masked = _masking.mask_variable(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:pa55@collector:4318"
        )

        assert masked == "https://user:***@collector:4318"

    def test_url_bare_user(self) -> None:
        """A user part without a password is read as a token."""
        masked = _masking.mask_url("https://abc123@sentry.example/1")

        assert masked == "https://***@sentry.example/1"

    def test_url_query_secret(self) -> None:
        """Secret-looking query values are masked, others kept."""
        masked = _masking.mask_url("http://c:4318/v1/traces?api_key=k&region=eu")

        assert masked == "http://c:4318/v1/traces?api_key=***&region=eu"

    @pytest.mark.parametrize(
        "name",
        ["DD_API_KEY", "MY_SERVICE_TOKEN", "OTEL_EXPORTER_OTLP_CLIENT_KEY", "PASSWD"],
    )
    def test_secret_names(self, name: str) -> None:
        """A variable whose name looks secret is masked whole."""
        assert _masking.mask_variable(name, "s3cret") == "***"

    def test_resource_attributes(self) -> None:
        """Only secret-looking resource attributes lose their values."""
        masked = _masking.mask_variable(
            "OTEL_RESOURCE_ATTRIBUTES", "service.version=1.2,deploy.token=t"
        )

        assert masked == "service.version=1.2,deploy.token=***"

    def test_extra_redacted_keys(self) -> None:
        """Parts from JOBTRACE_REDACT_KEYS mark names as secret too."""
        masked = _masking.mask_variable(
            "OTEL_RESOURCE_ATTRIBUTES", "tenant.pin=42,region=eu", extra=("pin",)
        )

        assert masked == "tenant.pin=***,region=eu"

    def test_url_signature_and_fragment(self) -> None:
        """An Azure SAS signature and a fragment are masked, other values kept."""
        masked = _masking.mask_url(
            "https://a.blob.example/c?sv=2022&sig=S1G&code=C0DE&pwd=p#t0ken"
        )

        assert masked == "https://a.blob.example/c?sv=2022&sig=***&code=***&pwd=***#***"

    @pytest.mark.parametrize(
        "key",
        [
            *("sig", "signature", "code", "password", "pwd", "secret", "auth"),
            *("access_token", "token", "key", "api_key", "apikey"),
        ],
    )
    def test_url_secret_query_keys(self, key: str) -> None:
        """Each common secret query key loses its value."""
        masked = _masking.mask_url(f"http://c:4318/v1/traces?{key}=V4LUE&a=b")

        assert masked == f"http://c:4318/v1/traces?{key}=***&a=b"

    def test_short_words_only_whole(self) -> None:
        """``sig`` and ``code`` mask a whole name only, not ``signal``."""
        assert not _masking.is_secret_name("signal")
        assert not _masking.is_secret_name("OTEL_EXPORTER_OTLP_COMPRESSION")
        assert _masking.mask_url("http://c/?signal=x&encoding=y") == (
            "http://c/?signal=x&encoding=y"
        )

    def test_message_masked_and_capped(self) -> None:
        """An exception message loses URL secrets and is cut to a bounded length."""
        message = "cannot reach redis://u:hunter2@h:6379/0 " + "x" * 1000

        masked = _masking.mask_message(message)

        assert "hunter2" not in masked
        assert masked.startswith("cannot reach redis://u:***@h:6379/0 ")
        assert len(masked) == _masking.MAX_MESSAGE
        assert masked.endswith("...")

    def test_plain_values_unchanged(self) -> None:
        """Values without secrets pass unchanged."""
        assert _masking.mask_variable("OTEL_SERVICE_NAME", "shop") == "shop"
        assert _masking.mask_variable("JOBTRACE_REDACT_KEYS", "pin") == "pin"


class TestFinding:
    """The contract of a report line."""

    def test_problem_needs_fix(self) -> None:
        """A problem without a fix is a programming error."""
        with pytest.raises(ValueError, match="has no fix"):
            Finding("endpoint", "problem", "broken")

    def test_invalid_level(self) -> None:
        """Only the known levels are accepted."""
        with pytest.raises(ValueError, match="Invalid level"):
            Finding("endpoint", "fatal", "broken", fix="fix it")


class TestSettings:
    """The JOBTRACE_* settings come from jobtrace's settings module."""

    def test_effective_values(self) -> None:
        """Set values show as set, the rest as defaults."""
        _, variables, findings = _config.read_settings(
            {"JOBTRACE_PROPAGATION": "child", "JOBTRACE_FLUSH_TIMEOUT": "2"}
        )
        shown = {item.name: (item.value, item.source) for item in variables}

        assert findings == []
        assert shown["JOBTRACE_PROPAGATION"] == ("child", "environment")
        assert shown["JOBTRACE_FLUSH_TIMEOUT"] == ("2.0", "environment")
        assert shown["JOBTRACE_ENABLED"] == ("true", "default")
        assert shown["JOBTRACE_COMPONENT"] == ("", "unset")

    def test_invalid_value(self) -> None:
        """An invalid value is a problem whose fix names the variable."""
        _, _, findings = _config.read_settings({"JOBTRACE_FLUSH_TIMEOUT": "-1"})

        assert len(findings) == 1
        assert findings[0].level == "problem"
        assert "Invalid JOBTRACE_FLUSH_TIMEOUT='-1'" in findings[0].message
        assert findings[0].fix == (
            "set JOBTRACE_FLUSH_TIMEOUT to a valid value, or unset it"
        )

    def test_unknown_variable(self) -> None:
        """A misspelt JOBTRACE_* variable is a warning."""
        _, _, findings = _config.read_settings({"JOBTRACE_PROPOGATION": "child"})

        assert [item.level for item in findings] == ["warning"]
        assert "JOBTRACE_PROPOGATION is not a jobtrace setting" in findings[0].message

    def test_disabled(self) -> None:
        """Each switch that turns jobtrace off is a warning."""
        environ = {"JOBTRACE_ENABLED": "false", "OTEL_SDK_DISABLED": "true"}
        current, _, _ = _config.read_settings(environ)

        findings = _config.disabled_findings(current, environ)

        assert [item.level for item in findings] == ["warning", "warning"]

    def test_otel_listing(self) -> None:
        """OTEL_* variables show masked, unset ones with their defaults."""
        variables = _config.read_otel(
            {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer x", "OTEL_FOO": "1"},
            (),
        )
        shown = {item.name: (item.value, item.source) for item in variables}

        assert shown["OTEL_EXPORTER_OTLP_HEADERS"] == (
            "authorization=***",
            "environment",
        )
        assert shown["OTEL_TRACES_SAMPLER"] == ("parentbased_always_on", "default")
        assert shown["OTEL_FOO"] == ("1", "environment")


class TestResolve:
    """Endpoints resolve as the OTLP exporters resolve them."""

    def test_base_endpoint(self) -> None:
        """The common endpoint gets each signal's path appended."""
        targets, findings = _endpoint.resolve(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}
        )

        assert findings == []
        assert [item.url for item in targets] == [
            "http://c:4318/v1/traces",
            "http://c:4318/v1/metrics",
        ]

    def test_signal_endpoint_as_is(self) -> None:
        """A per-signal endpoint is used as it is."""
        targets, _ = _endpoint.resolve(
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/custom",
                "OTEL_METRICS_EXPORTER": "none",
            }
        )

        assert [(item.url, item.variable) for item in targets] == [
            ("http://t:1/custom", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        ]

    def test_grpc_default(self) -> None:
        """gRPC defaults to port 4317 and appends no path."""
        targets, _ = _endpoint.resolve(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRICS_EXPORTER": "none"}
        )

        assert [(item.protocol, item.url) for item in targets] == [
            ("grpc", "http://localhost:4317")
        ]

    def test_headers_per_signal(self) -> None:
        """Per-signal headers replace the common ones."""
        targets, _ = _endpoint.resolve(
            {
                "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
                "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "b=2",
            }
        )

        assert [dict(item.headers) for item in targets] == [{"a": "1"}, {"b": "2"}]

    def test_unsupported_protocol(self) -> None:
        """An unsupported protocol is a problem; http/protobuf is probed."""
        targets, findings = _endpoint.resolve(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_METRICS_EXPORTER": "none",
            }
        )

        assert [item.level for item in findings] == ["problem", "note"]
        assert "OTEL_EXPORTER_OTLP_PROTOCOL to http/protobuf or grpc" in str(
            findings[0].fix
        )
        assert [item.protocol for item in targets] == ["http/protobuf"]

    def test_unclosed_ipv6_bracket(self) -> None:
        """An endpoint that urllib cannot split is a problem naming the variable."""
        targets, _ = _endpoint.resolve({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"})

        findings = [_endpoint.probe(target, 1) for target in targets]

        assert [finding.level for finding in findings] == ["problem", "problem"]
        assert all(
            "endpoint OTEL_EXPORTER_OTLP_ENDPOINT=" in item.message for item in findings
        )

    def test_exporters_off(self) -> None:
        """With both exporters off, nothing is probed."""
        targets, findings = _endpoint.resolve(
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "console"}
        )

        assert targets == []
        assert [item.level for item in findings] == ["note", "note"]

    @pytest.mark.parametrize("path", ["/v1/traces", "/v1/metrics/", "/v1/logs"])
    def test_signal_path_in_base(self, path: str) -> None:
        """A base endpoint that ends in a signal's path is a problem."""
        targets, findings = _endpoint.resolve(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318" + path}
        )

        [finding] = findings
        assert finding.level == "problem"
        assert f"ends in {path.rstrip('/')}" in finding.message
        assert "http://c:4318/v1/" in finding.message
        assert "remove /v1/" in str(finding.fix)
        assert len(targets) == 2

    def test_signal_path_fix(self) -> None:
        """The fix offers the per-signal variable of the path's signal."""
        _, findings = _endpoint.resolve(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/v1/traces"}
        )

        [finding] = findings
        assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in str(finding.fix)
        assert "http://c:4318/v1/traces/v1/traces" in finding.message
        assert "http://c:4318/v1/traces/v1/metrics" in finding.message

    def test_signal_path_in_base_unused(self) -> None:
        """The path is no problem where no OTLP/HTTP signal uses the base."""
        grpc = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317/v1/traces",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        per_signal = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces",
            "OTEL_METRICS_EXPORTER": "none",
        }

        # Without the gRPC exporter installed, resolve() reports that instead.
        grpc_messages = [item.message for item in _endpoint.resolve(grpc)[1]]
        per_signal_messages = [
            item.message for item in _endpoint.resolve(per_signal)[1]
        ]

        assert not any("ends in" in message for message in grpc_messages)
        assert not any("ends in" in message for message in per_signal_messages)


def traces_target(url: str, **headers: str) -> _endpoint.Target:
    """A traces target at ``url`` over OTLP/HTTP."""
    return _endpoint.Target(
        "traces", "http/protobuf", url, "OTEL_EXPORTER_OTLP_ENDPOINT", headers
    )


def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class _HeaderRecorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.seen.append(dict(self.headers.items()))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def header_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that records request headers."""
    _HeaderRecorder.seen = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _HeaderRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class TestProbe:
    """Each probe outcome gives the right level and fix."""

    def test_receiver_ok(self, receiver: OtlpReceiver) -> None:
        """A receiver that accepts the empty request is ok."""
        finding = _endpoint.probe(traces_target(receiver.endpoint + "/v1/traces"), 2)

        assert finding.level == "ok"
        assert "returned 200" in finding.message
        assert receiver.request_count() == 1

    def test_sends_headers(self, header_server: str) -> None:
        """The probe sends the configured headers, so bad keys show."""
        target = traces_target(header_server + "/v1/traces", **{"x-api-key": "k"})

        finding = _endpoint.probe(target, 2)

        assert finding.level == "ok"
        assert _HeaderRecorder.seen[0]["x-api-key"] == "k"
        assert _HeaderRecorder.seen[0]["Content-Type"] == "application/x-protobuf"

    def test_refused(self) -> None:
        """A closed port is a problem naming host, port and fix."""
        port = closed_port()

        finding = _endpoint.probe(
            traces_target(f"http://127.0.0.1:{port}/v1/traces"), 2
        )

        assert finding.level == "problem"
        assert f"nothing listens on 127.0.0.1:{port}" in finding.message
        assert "start the collector" in str(finding.fix)

    def test_not_found(self, receiver: OtlpReceiver) -> None:
        """A 404 explains how the base and per-signal endpoints differ."""
        finding = _endpoint.probe(traces_target(receiver.endpoint + "/wrong"), 2)

        assert finding.level == "problem"
        assert "returned 404" in finding.message
        assert "without /v1/traces" in str(finding.fix)

    def test_server_error(self, receiver: OtlpReceiver) -> None:
        """A 503 is reported as a receiver that is up but failing."""
        receiver.set_fault(Fault(status=503))

        finding = _endpoint.probe(traces_target(receiver.endpoint + "/v1/traces"), 2)

        assert finding.level == "problem"
        assert "returned 503" in finding.message
        assert "up but failing" in str(finding.fix)

    def test_invalid_url(self) -> None:
        """An endpoint without a scheme is a problem."""
        finding = _endpoint.probe(traces_target("collector:4318/v1/traces"), 2)

        assert finding.level == "problem"
        assert "Invalid traces endpoint" in finding.message

    def test_unreadable_certificate(self, tmp_path: Path) -> None:
        """A CA file that cannot be read is a problem naming the file."""
        missing = tmp_path / "missing.pem"
        target = _endpoint.Target(
            "traces",
            "http/protobuf",
            "https://127.0.0.1:1/v1/traces",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            {},
            certificate=str(missing),
        )

        finding = _endpoint.probe(target, 2)

        assert finding.level == "problem"
        assert str(missing) in finding.message
        assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in str(finding.fix)

    def test_silent_bounded(self) -> None:
        """check() returns within its timeout when nothing responds."""
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(8)
            endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
            started = time.monotonic()

            findings = _endpoint.check({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, 0.5)
            took = time.monotonic() - started

        assert [item.level for item in findings] == ["problem", "problem"]
        assert "sent no response within 0.5 s" in findings[0].message
        assert took < 1.5

    def test_grpc_bare_address(self, receiver: OtlpReceiver) -> None:
        """For gRPC, a host:port without a scheme is valid."""
        address = receiver.endpoint.removeprefix("http://")
        target = _endpoint.Target(
            "traces", "grpc", address, "OTEL_EXPORTER_OTLP_ENDPOINT", {}
        )

        finding = _endpoint.probe(target, 2)

        assert finding.level == "ok"

    def test_grpc_connect(self, receiver: OtlpReceiver) -> None:
        """For gRPC, an open TCP port is ok."""
        target = _endpoint.Target(
            "traces", "grpc", receiver.endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT", {}
        )

        finding = _endpoint.probe(target, 2)

        assert finding.level == "ok"
        assert "TCP connection" in finding.message


class TestPlugins:
    """Plugin installation and activity checks."""

    def test_unsupported_host(self) -> None:
        """A host outside the plugin's range is a problem."""
        spec = _hosts.PLUGINS[0]
        plugin = _hosts.Plugin(spec, "0.1.0", "ep", "4.4.0", instrumented=False)

        findings = _hosts.plugin_findings([plugin], None, enabled=True)

        problems = [item for item in findings if item.level == "problem"]
        assert len(problems) == 1
        assert "supports celery >= 5.3, < 6, found celery 4.4.0" in problems[0].message

    def test_host_used_not_instrumented(self) -> None:
        """After --app, a used host without instrumentation is a problem."""
        spec = _hosts.PLUGINS[1]
        plugin = _hosts.Plugin(spec, "0.1.0", "ep", "2.0.0", instrumented=False)

        findings = _hosts.plugin_findings([plugin], {"rq"}, enabled=True)

        assert [item.level for item in findings] == ["problem"]
        assert "jobtrace_rq.instrument()" in str(findings[0].fix)

    def test_no_app_note(self) -> None:
        """Without --app, the report explains how to check activity."""
        spec = _hosts.PLUGINS[2]
        plugin = _hosts.Plugin(spec, "0.1.0", "ep", "2.2.1", instrumented=False)

        findings = _hosts.plugin_findings([plugin], None, enabled=True)

        assert [item.level for item in findings] == ["note"]
        assert "jobtrace doctor --app MODULE" in findings[0].message


def test_report_renders(receiver: OtlpReceiver) -> None:
    """collect() and render() give a report with every section."""
    report = collect(
        [],
        timeout=2,
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=hunter2",
        },
    )

    text = render(report)

    assert report.exit_code == 0
    assert "hunter2" not in text
    assert "x-api-key=***" in text
    assert "JOBTRACE_PROPAGATION" in text
    assert "opentelemetry-sdk" in text
    assert "Exporter endpoints" in text
    assert text.endswith("0 problem(s), " + f"{report.count('warning')} warning(s)\n")


class TestTracers:
    """Other tracers on the same host."""

    def test_contrib_installed(self) -> None:
        """An installed contrib Celery instrumentation is a warning with a fix."""
        if host_version("opentelemetry-instrumentation-celery") is None:
            pytest.skip("opentelemetry-instrumentation-celery is not installed")

        findings = _tracers.find({"celery"}, {})

        contrib = [
            item for item in findings if "instrumentation-celery" in item.message
        ]
        assert [item.level for item in contrib] == ["warning"]
        assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=celery" in str(contrib[0].fix)

    def test_contrib_disabled(self) -> None:
        """No warning when opentelemetry-instrument skips the contrib package."""
        environ = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask, celery"}

        findings = _tracers.find({"celery"}, environ)

        assert not [item for item in findings if item.level == "warning"]

    def test_sentry_inactive(self) -> None:
        """An installed, inactive sentry-sdk is a note per host."""
        # Importing sentry_sdk would import eventlet, which warns on every
        # later fork in this test process.
        if host_version("sentry-sdk") is None:
            pytest.skip("sentry-sdk is not installed")

        findings = _tracers.find({"rq", "dramatiq"}, {})

        sentry = [item for item in findings if "sentry-sdk" in item.message]
        assert [item.level for item in sentry] == ["note", "note"]


class TestProcesses:
    """Process model facts that depend on the installed versions."""

    def test_rq_2_spawn_worker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On RQ 2.x, SpawnWorker is a warning with a fix."""
        monkeypatch.setattr(
            _processes, "host_version", lambda name: "2.6.1" if name == "rq" else None
        )

        findings = _processes.find({"rq"}, {}, imported=False)

        warnings = [item for item in findings if item.level == "warning"]
        assert len(warnings) == 1
        assert "SpawnWorker" in warnings[0].message
        assert "upgrade to RQ 3.0" in str(warnings[0].fix)

    def test_rq_3_spawn_worker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On RQ 3.x, SpawnWorker is a note on where instrument() goes."""
        monkeypatch.setattr(
            _processes, "host_version", lambda name: "3.0.0" if name == "rq" else None
        )

        findings = _processes.find({"rq"}, {}, imported=False)

        assert [item.level for item in findings] == ["note", "note"]
        assert "pass it with -w" in findings[1].message

    def test_distro_without_grpc(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The distro's default gRPC protocol without its exporter is a warning."""
        monkeypatch.setattr(_processes, "host_version", lambda name: "0.66b2")
        monkeypatch.setattr(_processes.importlib.util, "find_spec", lambda name: None)

        findings = _processes.find(set(), {}, imported=False)

        assert [item.level for item in findings] == ["note", "warning"]
        assert "otlp_proto_grpc" in findings[1].message
        assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in str(findings[1].fix)

    def test_distro_with_protocol(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Setting the protocol removes the distro warning."""
        monkeypatch.setattr(_processes, "host_version", lambda name: "0.66b2")
        monkeypatch.setattr(_processes.importlib.util, "find_spec", lambda name: None)
        environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}

        findings = _processes.find(set(), environ, imported=False)

        assert [item.level for item in findings] == ["note"]


def test_failing_check_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that raises becomes a problem, and the other checks still run."""

    def broken(*args: object, **kwargs: object) -> list[Finding]:
        raise KeyError("boom")

    monkeypatch.setattr(_tracers, "find", broken)

    report = collect([], timeout=0.5, environ={"OTEL_TRACES_EXPORTER": "none"})

    failed = [item for item in report.findings if item.section == "tracers"]
    assert [item.level for item in failed] == ["problem"]
    assert "The tracers check failed: KeyError" in failed[0].message
    assert any(item.section == "endpoint" for item in report.findings)
    assert report.exit_code == 1


class TestSdkValues:
    """OTEL_* values that the SDK rejects are problems, and ignored ones warnings."""

    @staticmethod
    def levels(environ: dict[str, str]) -> list[str]:
        return [finding.level for finding in _sdk.check(environ)]

    def test_defaults_pass(self) -> None:
        """Unset and valid values give no finding."""
        assert _sdk.check({}) == []
        valid = {
            "OTEL_PROPAGATORS": "tracecontext, baggage",
            "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.5",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }
        assert _sdk.check(valid) == []

    def test_unknown_propagator(self) -> None:
        """An unknown propagator is a problem that lists the valid names."""
        [finding] = _sdk.check({"OTEL_PROPAGATORS": "tracecontext,bogus"})

        assert finding.level == "problem"
        assert "OTEL_PROPAGATORS names 'bogus'" in finding.message
        assert "tracecontext" in str(finding.fix)
        assert "baggage" in str(finding.fix)

    @pytest.mark.parametrize(
        "environ",
        [
            {"OTEL_BSP_MAX_QUEUE_SIZE": "-5"},
            {"OTEL_BSP_SCHEDULE_DELAY": "0"},
            {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-1"},
            {"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"},
        ],
    )
    def test_batch_values_that_raise(
        self, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Values that make the SDK's batch processor raise are problems."""
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
        )

        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValueError):
            BatchSpanProcessor(ConsoleSpanExporter())

        assert self.levels(environ) == ["problem"]

    def test_batch_value_not_integer(self) -> None:
        """A batch value that is not an integer falls back, so it warns."""
        [finding] = _sdk.check({"OTEL_BSP_EXPORT_TIMEOUT": "soon"})

        assert finding.level == "warning"
        assert "uses 30000" in finding.message

    @pytest.mark.parametrize("value", ["abc", "-1", "nan"])
    def test_export_timeout(self, value: str) -> None:
        """A timeout that is not a positive number is a problem."""
        [finding] = _sdk.check({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": value})

        assert finding.level == "problem"
        assert "JOBTRACE_FLUSH_TIMEOUT" in finding.message

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_TRACES_SAMPLER", "bogus"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "abc"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem"),
        ],
    )
    def test_fallbacks_warn(self, name: str, value: str) -> None:
        """Values that the SDK replaces with its default are warnings with a fix."""
        [finding] = _sdk.check({name: value})

        assert finding.level == "warning"
        assert name in finding.message
        assert finding.fix

    def test_sampler_ratio(self) -> None:
        """A ratio sampler without a valid ratio warns."""
        environ = {"OTEL_TRACES_SAMPLER": "traceidratio"}

        assert self.levels(environ) == ["warning"]
        assert self.levels({**environ, "OTEL_TRACES_SAMPLER_ARG": "2"}) == ["warning"]
