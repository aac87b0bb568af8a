"""Real parts for the tests: SQS server processes (moto and LocalStack), the app as a process,
Socket.IO clients and headless Chromium.

Outside CI a missing LocalStack or Chromium skips the tests that need it, saying how to install it;
under CI (CI=true) it fails them, so a green run always means the real components ran.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil

import pytest

from tests.servers import (CHROMIUM_FLAGS, GUNICORN, ROOT, TEST_ENV, AppProcess, Listener, LocalStack,  # noqa: F401
                           SqsEndpoint, endpoint_env, free_port, localstack_python, start_moto_server,
                           stop_process, wait_until)

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str):
    """Skip locally, fail under CI: CI must never pass without the real component."""
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


# ---------------------------------------------------------------------------- SQS servers


@pytest.fixture(scope="session")
def moto_endpoint():
    port = free_port()
    proc = start_moto_server(port)
    yield SqsEndpoint("moto", f"http://127.0.0.1:{port}")
    stop_process(proc)


@pytest.fixture(scope="session")
def localstack_endpoint():
    python = localstack_python()
    if not python:
        unavailable("LocalStack is not installed (make test installs it into .venv-localstack with Python 3.13)")
    try:
        localstack = LocalStack(python)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield SqsEndpoint("localstack", localstack.url)
    localstack.stop()


@pytest.fixture(params=["moto", "localstack"])
def sqs(request) -> SqsEndpoint:
    """Each test that takes `sqs` runs against a moto server and against LocalStack."""
    return request.getfixturevalue(f"{request.param}_endpoint")


# ---------------------------------------------------------------------------- the app as a process


@pytest.fixture
def start_app():
    """Start app processes: `start_app(APP_MODE="consumer", ...)`; all are stopped after the test."""
    apps: list[AppProcess] = []

    def start(wait: bool = True, command: list[str] | None = None, **env) -> AppProcess:
        app = AppProcess({k: str(v) for k, v in env.items()}, command=command)
        apps.append(app)
        return app.wait_healthy() if wait else app

    yield start
    for app in apps:
        app.stop()
        os.unlink(app.log_file.name)


# ---------------------------------------------------------------------------- Socket.IO clients


@pytest.fixture
def listen():
    listeners: list[Listener] = []

    def connect(base_url: str, **kwargs) -> Listener:
        listener = Listener(base_url, **kwargs)
        listeners.append(listener)
        return listener

    yield connect
    # In parallel: a client's disconnect waits for its reader to stop, about 2.5 s each.
    with concurrent.futures.ThreadPoolExecutor(max(1, len(listeners))) as pool:
        list(pool.map(Listener.close, listeners))


# ---------------------------------------------------------------------------- Chromium


@pytest.fixture(scope="session")
def browser():
    executable = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        unavailable("Chromium is not installed (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


def producer_app(sqs, queue_name: str):
    """A producer-only app (no consumer thread) on `queue_name` at `sqs`, built from settings, not
    globals. Returns its Flask test client and the queue's URL (the app creates the queue and its DLQ)."""
    from app import create_app
    from settings import Settings

    settings = Settings.from_env({"APP_MODE": "producer", "AWS_ENDPOINT_URL": sqs.url, "QUEUE_NAME": queue_name})
    app = create_app(settings, start_consumer=False)
    return app.test_client(), app.extensions["sqs_app"].queue.url()
