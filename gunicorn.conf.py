"""Gunicorn settings for the container image: `gunicorn --config gunicorn.conf.py 'app:create_app()'`.

One worker, always: Socket.IO keeps its clients in the process, and the consumer must run once.
ASYNC_MODE picks the worker: threads (gthread) for threading, the eventlet worker for eventlet.
"""

import os
import sys
import warnings

from settings import Settings, SettingsError

# eventlet 0.41 warns on import that it is in maintenance mode (the README says so); once is enough.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

try:
    _settings = Settings.from_env()
except SettingsError as exc:  # the same one-line error as `python app.py`, before any worker starts
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

if _settings.async_mode == "eventlet" and _settings.backend == "embedded":
    # The embedded endpoint is a threaded server inside the worker, which Gunicorn's eventlet worker
    # never lets start: the app would hang at boot.
    print("configuration error: ASYNC_MODE=eventlet under Gunicorn needs an external SQS endpoint "
          "(AWS_ENDPOINT_URL or SQS_BACKEND=aws); the embedded one runs with `python app.py`", file=sys.stderr)
    sys.exit(2)

bind = f"{_settings.host}:{_settings.port}"
workers = 1
if _settings.async_mode == "eventlet":
    worker_class = "eventlet"
    worker_connections = 1000
else:
    worker_class = "gthread"
    # Each browser's WebSocket holds a thread for as long as the tab is open; the app refuses more
    # than MAX_BROWSERS, and 20 more threads stay free for probes, /produce and page loads.
    threads = _settings.max_browsers + 20
# Longer than one long poll (20 s), which the consumer waits for on SIGTERM, plus the messages in hand.
graceful_timeout = 30
timeout = 60
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()


def post_worker_init(worker):
    """On SIGTERM, start stopping the consumer at once, in the background.

    Gunicorn waits up to graceful_timeout for open requests before the worker exits, and a browser's
    Socket.IO connection never ends by itself: without this the consumer would keep taking messages
    until it is killed. `shutdown` also closes those connections, so the worker can exit early.
    """
    import signal

    state = worker.wsgi.extensions.get("sqs_app")
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        if state is not None:
            state.socketio.start_background_task(state.shutdown, graceful_timeout - 5)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server, worker):
    """Last stop: make sure nothing is in hand before the worker process ends."""
    state = getattr(worker, "wsgi", None) and worker.wsgi.extensions.get("sqs_app")
    if state is not None:
        state.stop(timeout=graceful_timeout - 5)
