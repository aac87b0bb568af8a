"""The Flask app: producer page and API, consumer page fed live over Socket.IO, health endpoints.

    python app.py                      # producer + consumer on http://127.0.0.1:5000, embedded SQS
    APP_MODE=consumer python app.py    # what mirrord runs locally against the deployed consumer
    gunicorn --config gunicorn.conf.py 'app:create_app()'   # what the container image runs

Where things happen:
- a message is sent:     sqs_producer.SqsProducer.produce   (POST /produce)
- a message is received: sqs_consumer.SqsConsumer._poll_once
- a message is handled:  to_browser_event below (the consumer's handler, once per message)
- a message is emitted:  deliver_to_browsers below (one `sqs_messages` event per received batch,
                         which every connected browser confirms)
- a message is deleted:  sqs_consumer.SqsConsumer._delete, after both returned
"""

import os

# eventlet must patch the standard library before anything imports ssl, boto3 or botocore.
if os.environ.get("ASYNC_MODE", "").strip().lower() == "eventlet":
    import warnings

    # eventlet 0.41 warns on import that it is in maintenance mode; README says the same, once.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import eventlet

    eventlet.monkey_patch()

import collections  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

from flask import Flask, jsonify, render_template, request, send_from_directory  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402
from werkzeug.exceptions import HTTPException  # noqa: E402
from werkzeug.wsgi import ClosingIterator  # noqa: E402

from settings import Settings, SettingsError  # noqa: E402
from sqs_consumer import ReceivedMessage, SqsConsumer  # noqa: E402
from sqs_producer import JsonInt, JsonNumber, ProduceError, SqsProducer  # noqa: E402
from sqs_queue import SQS_ERRORS, EmbeddedSqs, QueueBusy, SqsQueue, describe_error, make_client  # noqa: E402

log = logging.getLogger("app")

SOCKET_IO_CLIENT_DIR = Path(__file__).resolve().parent / "node_modules" / "socket.io-client" / "dist"
# A 1 MiB message written with \uXXXX escapes, plus base64 attributes, fits comfortably.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
READY_CACHE_SECONDS = 1.0
# A poll loop that has not finished a receive for this long past its wait time is stuck.
HEALTH_GRACE_SECONDS = 45
# Bodies go to browsers up to this many characters, flagged `body_truncated` with the whole length in
# `body_chars` beyond it (the page shows 2,000): ten 1 MiB bodies to each of twenty tabs would be
# 200 MB of frames per batch. Late joiners' history copies are shorter still.
LIVE_BODY_CHARS = 64 * 1024
HISTORY_BODY_CHARS = 10_000
STATUS_INTERVAL = 0.25   # seconds between counter updates sent to browsers
# How long a batch waits for the browsers' confirmations before it is deleted anyway; a browser that
# misses it is not waited for again until it has caught up.
CONFIRM_TIMEOUT = 5.0
# After SIGTERM, a /produce burst still sending stops this many seconds later, between two SQS calls,
# and answers 503 with what it sent (inside Gunicorn's 30 s and the pod's 60 s grace).
STOP_SENDING_AFTER = 15
EMBEDDED_STOP_SECONDS = 2


class SimulatedFailure(Exception):
    """Raised for messages carrying the `simulate_failure` attribute, to show retries and the DLQ."""


class SqsApp:
    """Everything the routes share: settings, the queue, the producer, the consumer, recent messages."""

    def __init__(self, settings: Settings, socketio: SocketIO):
        self.settings = settings
        self.socketio = socketio
        self.started_at = time.time()
        self.embedded = EmbeddedSqs() if settings.backend == "embedded" else None
        endpoint = self.embedded.endpoint_url if self.embedded else settings.endpoint_url
        # The poller's read timeout must outlast its long poll; it retries by itself with backoff.
        poll_client = make_client(settings, endpoint, read_timeout=settings.wait_time_seconds + 10,
                                  max_attempts=1)
        # A hung endpoint must not hold a /produce request for long: 2 tries of at most 2 + 5 s.
        send_client = make_client(settings, endpoint, read_timeout=5, connect_timeout=2, max_attempts=2)
        # Readiness answers in well under a second, whatever the long poll is doing.
        self.probe_client = make_client(settings, endpoint, read_timeout=2, connect_timeout=0.5,
                                        max_attempts=1)
        # One queue, resolved once, shared by the producer, the consumer and the probes.
        self.queue = SqsQueue(send_client, settings, endpoint)
        self.producer = SqsProducer(send_client, self.queue) if settings.runs_producer else None
        self.history: collections.deque = collections.deque(maxlen=settings.history_size)
        self.browsers = Browsers(socketio, CONFIRM_TIMEOUT)
        self.consumer = None
        if settings.runs_consumer:
            self.consumer = SqsConsumer(
                poll_client, self.queue, self.to_browser_event, publish=self.deliver_to_browsers,
                wait_time_seconds=settings.wait_time_seconds, max_messages=settings.max_messages,
                visibility_timeout=settings.visibility_timeout, concurrency=settings.pollers,
                on_event=self.on_consumer_event, spawn=socketio.start_background_task)
        self._ready_lock = threading.Lock()
        self._ready_cache: tuple[float, int, dict] | None = None
        self._dlq_url: str | None = None
        self.stopping = False             # SIGTERM received: /produce answers 503, /readyz 503
        self._requests_in_flight = 0
        self._requests_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._status_due = False          # a counters update is scheduled
        self._status_sent_at = 0.0

    # -- consumer side -------------------------------------------------------------------------

    def to_browser_event(self, message: ReceivedMessage) -> dict:
        """The consumer's handler, once per message: what browsers will show. Put a breakpoint here."""
        if "simulate_failure" in message.attributes:
            raise SimulatedFailure(f"simulated failure (attempt {message.receive_count})")
        event = {
            "id": message.message_id,
            "body": message.body[:LIVE_BODY_CHARS],
            "is_json": _is_json(message.body),
            "attributes": message.attributes_as_text(),
            "receive_count": message.receive_count,
            "sent_at": message.sent_timestamp_ms,
            "received_at": int(message.received_at * 1000),
            "group_id": message.group_id,
            "consumer": self.settings.consumer_name,
        }
        if len(message.body) > LIVE_BODY_CHARS:
            event.update(body_truncated=True, body_chars=len(message.body))
        return event

    def deliver_to_browsers(self, events: list[dict]):
        """The consumer's publish step: one `sqs_messages` event per received batch (1-10 messages)
        to every connected browser, each of which confirms it. Returns the wait for those
        confirmations, after which the consumer deletes the batch: a consumer killed at any moment
        has deleted only what the browsers already have. One frame per batch instead of per message
        keeps twenty tabs, or one slow one, up with a backlog."""
        # Late joiners get a shortened copy: fifty 1 MiB bodies would make a page load take seconds.
        recent = [event if len(event["body"]) <= HISTORY_BODY_CHARS else
                  {**event, "body": event["body"][:HISTORY_BODY_CHARS], "body_truncated": True,
                   "body_chars": event.get("body_chars", len(event["body"]))} for event in events]
        # The history grows while send() picks its recipients: a browser connecting meanwhile gets
        # these messages in its history or live, never neither.
        return self.browsers.send("sqs_messages", {"messages": events},
                                  record=lambda: self.history.extend(recent))

    def on_consumer_event(self, name: str, details: dict) -> None:
        if name == "failed":
            message = details["message"]
            info = self.queue.cached
            self.socketio.emit("sqs_message_failed", {
                "id": message.message_id, "error": details["error"], "receive_count": message.receive_count,
                "max_receive_count": info.max_receive_count if info else None,
                "dead_letter_queue": self.queue.dead_letter_queue_name,
                "consumer": self.settings.consumer_name})
        if name == "batch_done":
            self._send_status_soon()
        elif name in ("error", "recovered", "stopped"):
            self.socketio.emit("consumer_status", self.consumer_status())

    def _send_status_soon(self) -> None:
        """Counters after a batch, at most every STATUS_INTERVAL: under a backlog a status per batch
        would be half the frames every browser reads. The last one is always sent."""
        with self._status_lock:
            if self._status_due:
                return
            self._status_due = True
            delay = max(0.0, self._status_sent_at + STATUS_INTERVAL - time.monotonic())

        def send():
            if delay:
                self.socketio.sleep(delay)
            with self._status_lock:
                self._status_due = False
                self._status_sent_at = time.monotonic()
            self.socketio.emit("consumer_status", self.consumer_status())

        self.socketio.start_background_task(send)

    def consumer_status(self) -> dict:
        stats = self.consumer.stats.snapshot() if self.consumer else None
        return {"consumer": self.settings.consumer_name, "stats": stats, "queue": self.queue.describe()}

    def start(self) -> None:
        self.socketio.start_background_task(self._resolve_queue_early)
        if self.consumer:
            self.consumer.start()

    def _resolve_queue_early(self) -> None:
        """Resolve (or create) the queue at start, so the log and the page show its URL at once."""
        try:
            self.queue.info()
        except SQS_ERRORS as exc:
            log.warning("queue %s not available yet (%s); will retry on use", self.queue.name,
                        describe_error(exc))

    def stop(self, timeout: float) -> bool:
        """Stop the consumer, waiting at most `timeout` (the long poll in flight and the messages in
        hand). On the embedded endpoint at most EMBEDDED_STOP_SECONDS: its queue ends with this
        process, so there is nothing to hand back and no long poll worth waiting out."""
        if self.embedded:
            timeout = min(timeout, EMBEDDED_STOP_SECONDS)
        return self.consumer.stop(timeout) if self.consumer else True

    def shutdown(self, timeout: float) -> bool:
        """SIGTERM: refuse new /produce requests (503) and report not ready, stop the consumer
        (finishing the messages in hand), then close browser connections, which would otherwise keep
        the server waiting for its grace period. True if all finished."""
        with self._requests_lock:
            self.stopping = True
        if self.producer:
            self.producer.stop_sending_at = time.monotonic() + STOP_SENDING_AFTER
        finished = self.stop(timeout)
        server = self.socketio.server
        for sid, _ in list(server.manager.get_participants("/", None)):
            server.disconnect(sid)
        return finished

    def begin_request(self) -> bool:
        """A /produce request starts, and counts until end_request; False once the app is stopping
        (the request is refused, and its refusal counts until written)."""
        with self._requests_lock:
            self._requests_in_flight += 1
            return not self.stopping

    def end_request(self) -> None:
        """Its answer is written (see _Draining)."""
        with self._requests_lock:
            self._requests_in_flight -= 1

    def wait_for_requests(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._requests_in_flight and time.monotonic() < deadline:
            self.socketio.sleep(0.05)
        return not self._requests_in_flight

    # -- health --------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict]:
        if not self.consumer:
            return 200, {"status": "ok"}
        age = self.consumer.seconds_since_last_poll()
        if age is None:
            age = time.time() - self.started_at
        limit = self.settings.wait_time_seconds + HEALTH_GRACE_SECONDS
        if not self.consumer.running:
            return 503, {"status": "poll loop not running", "state": self.consumer.stats.state}
        if age > limit:
            return 503, {"status": f"poll loop silent for {age:.0f}s (limit {limit}s)"}
        return 200, {"status": "ok", "seconds_since_last_poll": round(age, 1)}

    def readiness(self) -> tuple[int, dict]:
        """200 when the queue is resolved and SQS answers a quick probe; never waits on a slow lookup."""
        if self.stopping:
            return 503, {"status": "not ready", "reason": "shutting down"}
        cached = self._ready_cache
        if cached and time.monotonic() - cached[0] < READY_CACHE_SECONDS:
            return cached[1], cached[2]
        if not self._ready_lock.acquire(blocking=False):
            # Another request is probing right now: answer with what we knew last.
            return (cached[1], cached[2]) if cached else (503, {"status": "not ready", "reason": "checking SQS"})
        try:
            try:
                info = self.queue.info(client=self.probe_client, wait=False)
                answer = 200, {"status": "ready", "queue_url": info.url, **self._depths(info)}
            except QueueBusy as exc:
                answer = 503, {"status": "not ready", "reason": str(exc), **self.queue.describe()}
            except SQS_ERRORS as exc:
                answer = 503, {"status": "not ready", "reason": describe_error(exc), **self.queue.describe()}
            self._ready_cache = (time.monotonic(), *answer)
            return answer
        finally:
            self._ready_lock.release()

    def _depths(self, info) -> dict:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = self.probe_client.get_queue_attributes(QueueUrl=info.url, AttributeNames=names)["Attributes"]
        depths = {"messages_visible": int(attrs.get(names[0], 0)), "messages_in_flight": int(attrs.get(names[1], 0))}
        dlq_name = self.queue.dead_letter_queue_name
        if dlq_name:
            depths.update(dead_letter_queue=dlq_name, max_receive_count=info.max_receive_count)
            try:
                if self._dlq_url is None:
                    self._dlq_url = self.probe_client.get_queue_url(QueueName=dlq_name)["QueueUrl"]
                dlq = self.probe_client.get_queue_attributes(QueueUrl=self._dlq_url, AttributeNames=names[:1])
                depths["dead_letter_messages"] = int(dlq["Attributes"].get(names[0], 0))
            except SQS_ERRORS as exc:
                # The app works without reading it (deleted, or no IAM rights on it): still ready.
                self._dlq_url = None
                depths["dead_letter_error"] = describe_error(exc)
        return depths


def create_app(settings: Settings | None = None, *, start_consumer: bool = True) -> Flask:
    """Build the app from `settings` (the environment by default) and start its consumer."""
    settings = settings or Settings.from_env()
    configure_logging(settings)
    app = Flask(__name__)
    # One byte over our own cap: Werkzeug silently cuts a chunked body at this limit, and the extra
    # byte lets _read_json_request tell "too large" from "exactly at the limit".
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES + 1
    socketio = SocketIO(app, async_mode=settings.async_mode,
                        cors_allowed_origins=_allowed_origins(settings.cors_allowed_origins))
    app.wsgi_app = _BrowserLimit(app.wsgi_app, socketio, settings.max_browsers)
    state = SqsApp(settings, socketio)
    app.wsgi_app = _Draining(app.wsgi_app, state)
    app.extensions["sqs_app"] = state
    _register_routes(app, state)
    _register_socket_events(socketio, state)
    log.info("mode=%s async=%s consumer=%s backend=%s endpoint=%s region=%s queue=%s",
             settings.app_mode, settings.async_mode, settings.consumer_name,
             *(state.queue.describe()[k] for k in ("backend", "endpoint", "region", "queue_name")))
    if settings.backend == "embedded" and settings.app_mode != "all":
        log.warning("APP_MODE=%s on the embedded endpoint: it lives inside this process, so no other "
                    "process can reach its queue; use APP_MODE=all, or LocalStack for separate processes",
                    settings.app_mode)
    if not (SOCKET_IO_CLIENT_DIR / "socket.io.min.js").is_file():
        log.warning("the Socket.IO browser client is missing (run `npm ci`): pages will not update live")
    if start_consumer:
        state.start()
    return app


def _register_routes(app: Flask, state: SqsApp) -> None:
    settings = state.settings

    @app.after_request
    def security_headers(response):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # JSON for every error, never an HTML page or a traceback.
        if exc.code == 413:
            return jsonify({"error": f"the request body is over {MAX_REQUEST_BYTES // (1024 * 1024)} MiB",
                            "field": "body"}), 413
        return jsonify({"error": exc.description, "field": None}), exc.code

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("unexpected error")
        return jsonify({"error": f"internal error: {type(exc).__name__}", "field": None}), 500

    @app.get("/")
    def index():
        return render_template("index.html", settings=settings, queue=state.queue.describe())

    @app.route("/produce", methods=["POST"], provide_automatic_options=False)
    def produce():
        if not state.producer:
            return jsonify({"error": f"this instance runs APP_MODE={settings.app_mode}: no producer",
                            "field": None}), 404
        try:
            payload = _read_json_request()
        except ProduceError as exc:
            return jsonify(exc.to_json()), exc.status
        try:
            return jsonify(state.producer.produce(payload))
        except ProduceError as exc:
            return jsonify(exc.to_json()), exc.status

    @app.get("/healthz")
    def healthz():
        status, body = state.health()
        return jsonify(body), status

    @app.get("/readyz")
    def readyz():
        status, body = state.readiness()
        return jsonify(body), status

    @app.get("/status")
    def status():
        return jsonify({"mode": settings.app_mode, "async_mode": settings.async_mode,
                        "browsers": {"connected": _open_connections(state.socketio), "max": settings.max_browsers,
                                     "lagging": state.browsers.lagging},
                        **state.consumer_status()})

    @app.get("/vendor/socket.io.min.js")
    def socket_io_client():
        if not (SOCKET_IO_CLIENT_DIR / "socket.io.min.js").is_file():
            return jsonify({"error": "Socket.IO browser client not installed: run `npm ci`", "field": None}), 404
        return send_from_directory(SOCKET_IO_CLIENT_DIR, "socket.io.min.js", max_age=3600)


class Browsers:
    """Sends a batch to each connected browser and waits until each has confirmed it (a Socket.IO
    acknowledgement), or `timeout` passed.

    A browser that misses the deadline (a hung or frozen tab) is "lagging": it still gets every batch,
    but nobody waits for it until it has confirmed all it was sent, so one bad tab cannot slow the
    consumer down to one batch per timeout."""

    def __init__(self, socketio: SocketIO, timeout: float):
        self.socketio, self.timeout = socketio, timeout
        self._lock = threading.Lock()
        self._owed: dict[str, int] = {}        # sid -> batches sent and not confirmed yet
        self._lagging: set[str] = set()
        self._waits: list[tuple[set, object]] = []   # (sids still to confirm, event set when none)

    def send(self, event: str, data: dict, record: Callable[[], None] = lambda: None) -> Callable[[], int]:
        """Send to every connected browser now; `record()` runs while the recipients are picked (see
        `joining`). Returns the wait for their confirmations, which returns how many of the browsers
        it waited for did not confirm within `timeout`."""
        done = self.socketio.server.eio.create_event()
        with self._lock:
            sids = [sid for sid, _ in self.socketio.server.manager.get_participants("/", None)]
            record()
            waiting = {sid for sid in sids if sid not in self._lagging}
            for sid in sids:
                self._owed[sid] = self._owed.get(sid, 0) + 1
            wait = (waiting, done)
            self._waits.append(wait)
            if not waiting:
                done.set()
        for sid in sids:
            self.socketio.emit(event, data, to=sid, callback=functools.partial(self._confirmed, sid, wait))

        def confirmations() -> int:
            done.wait(self.timeout)
            with self._lock:
                self._waits.remove(wait)
                # A browser that left between the send and its `disconnect` event is not lagging, gone.
                gone = {sid for sid in waiting if not self.socketio.server.manager.is_connected(sid, "/")}
                for sid in gone:
                    self._owed.pop(sid, None)
                late = waiting - gone
                self._lagging |= late
                # Other batches already sent stop waiting for a late browser too: one timeout in all.
                for sid in late:
                    for other in self._waits:
                        self._release(sid, other)
            if late:
                log.info("%d browser(s) did not confirm a batch within %.0fs; not waiting for them again "
                         "until they catch up", len(late), self.timeout)
            return len(late)

        return confirmations

    def joining(self, read: Callable[[], object]):
        """`read()` (a copy of the history) for a browser that is connecting: taken under the lock
        `send` picks recipients under, so each batch is in what it returns or sent to the browser."""
        with self._lock:
            return read()

    def _confirmed(self, sid: str, wait: tuple[set, object], *_answer) -> None:
        with self._lock:
            owed = self._owed.get(sid, 0) - 1
            if owed > 0:
                self._owed[sid] = owed
            else:   # caught up
                self._owed.pop(sid, None)
                self._lagging.discard(sid)
            self._release(sid, wait)

    @property
    def lagging(self) -> int:
        """Browsers that missed a confirmation deadline and have not caught up yet."""
        return len(self._lagging)

    def forget(self, sid: str) -> None:
        """A browser disconnected: nothing waits for it any more."""
        with self._lock:
            self._owed.pop(sid, None)
            self._lagging.discard(sid)
            for wait in self._waits:
                self._release(sid, wait)

    @staticmethod
    def _release(sid: str, wait: tuple[set, object]) -> None:
        waiting, done = wait
        waiting.discard(sid)
        if not waiting:
            done.set()


def _open_connections(socketio: SocketIO) -> int:
    """Browsers holding a connection: joined to Socket.IO, or on a WebSocket (a thread each under
    Gunicorn's threads). An Engine.IO handshake that never joins holds nothing and is not counted,
    so a script opening handshakes cannot lock real tabs out. Closed sockets wait in Engine.IO's
    table for its sweep (up to 20 s): not counted either."""
    server = socketio.server
    return sum(1 for eio_sid, s in list(server.eio.sockets.items())
               if not s.closed and (s.upgraded or server.manager.sid_from_eio_sid(eio_sid, "/")))


class _BrowserLimit:
    """WSGI middleware: refuses a new Socket.IO connection with 503 once MAX_BROWSERS are open.

    Under Gunicorn's threads every open WebSocket holds a thread; with no cap, one tab too many would
    leave no thread for /healthz, and the pod would be restarted by its own viewers."""

    def __init__(self, wsgi_app, socketio: SocketIO, limit: int):
        self.wsgi_app, self.socketio, self.limit = wsgi_app, socketio, limit

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/socket.io") and \
                "sid" not in urllib.parse.parse_qs(environ.get("QUERY_STRING", "")):
            connected = _open_connections(self.socketio)
            if connected >= self.limit:
                body = json.dumps({"error": f"too many browser connections: {connected} open, the limit is "
                                            f"MAX_BROWSERS={self.limit}", "field": "MAX_BROWSERS"}).encode()
                start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                                           ("Content-Length", str(len(body))), ("Retry-After", "5")])
                return [body]
        return self.wsgi_app(environ, start_response)


def _allowed_origins(extra: tuple[str, ...]):
    """Which pages may open a Socket.IO connection: the app's own origin always (None is Engine.IO's
    same-origin check), and those listed in CORS_ALLOWED_ORIGINS (settings.py normalises them)."""
    if not extra:
        return None

    def allowed(origin: str, environ: dict) -> bool:
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http")).split(",")[0]
        hosts = {environ.get("HTTP_HOST", ""), environ.get("HTTP_X_FORWARDED_HOST", "").split(",")[0]}
        own = {f"{scheme.strip()}://{host.strip()}".lower() for host in hosts if host}
        return origin.lower() in own or origin.lower() in extra

    return allowed


class _Draining:
    """WSGI middleware: counts /produce requests until their answer is written, so that shutdown
    waits for exactly those; once the app is stopping, refuses new ones with 503 before reading
    them, so a SIGTERM under load ends in seconds with every accepted request answered."""

    def __init__(self, wsgi_app, state: SqsApp):
        self.wsgi_app, self.state = wsgi_app, state

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/produce":
            return self.wsgi_app(environ, start_response)
        if not self.state.begin_request():
            body = json.dumps({"error": "this instance is shutting down: nothing was sent; retry (another "
                                        "instance, or this one once restarted)", "field": None,
                               "sent": 0, "message_ids": []}).encode()
            start_response("503 Service Unavailable", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Retry-After", "1"), ("Connection", "close")])
            return ClosingIterator([body], [self.state.end_request])
        try:
            return ClosingIterator(self.wsgi_app(environ, start_response), [self.state.end_request])
        except BaseException:
            self.state.end_request()
            raise


def _register_socket_events(socketio: SocketIO, state: SqsApp) -> None:
    @socketio.on("connect")
    def on_connect(auth=None):
        # Late joiners see what they missed, up to HISTORY_SIZE messages, oldest first.
        history = state.browsers.joining(lambda: list(state.history))
        socketio.emit("sqs_history", {"messages": history}, to=request.sid)
        socketio.emit("consumer_status", state.consumer_status(), to=request.sid)

    @socketio.on("disconnect")
    def on_disconnect(*_reason):
        state.browsers.forget(request.sid)


def _read_json_request():
    """The request body as JSON, strictly: UTF-8, no NaN or Infinity, no duplicate keys, bounded
    size and depth. Anything else is a ProduceError naming what is wrong."""
    if not request.is_json:
        # Also refuses cross-site HTML form posts, which cannot send application/json.
        raise ProduceError(415, "send the request as JSON with Content-Type: application/json", "Content-Type")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise ProduceError(415, f"send JSON as UTF-8 (got charset={charset})", "Content-Type")
    if request.content_encoding:
        raise ProduceError(415, f"Content-Encoding {request.content_encoding} is not accepted; send plain JSON",
                           "Content-Encoding")
    # Read at most one byte more than allowed, so a chunked body without Content-Length is bounded too.
    data = request.stream.read(MAX_REQUEST_BYTES + 1)
    if len(data) > MAX_REQUEST_BYTES:
        raise ProduceError(413, f"the request body is over {MAX_REQUEST_BYTES // (1024 * 1024)} MiB", "body")
    try:
        return strict_json(data.decode("utf-8"), request_body=True)
    except UnicodeDecodeError:
        raise ProduceError(400, "the request body is not valid UTF-8", "body") from None
    except DuplicateKey as exc:
        raise ProduceError(400, f"duplicate key {exc.key!r} in the JSON body", exc.path) from None
    except RecursionError:
        raise ProduceError(400, "the JSON body is nested too deeply", "body") from None
    except ValueError as exc:
        raise ProduceError(400, f"the request body is not valid JSON ({exc})", "body") from None


class DuplicateKey(ValueError):
    def __init__(self, key: str, path: str):
        super().__init__(key)
        self.key, self.path = key, path


class _Object(dict):
    """A parsed JSON object that remembers the first key it had twice (`duplicate`)."""

    duplicate: str | None = None


def _keep_duplicates(pairs):
    result = _Object()
    for key, value in pairs:
        if key in result and result.duplicate is None:
            result.duplicate = key
        result[key] = value
    return result


def _first_duplicate(value, path: str = "") -> DuplicateKey | None:
    """The first key given twice, with its dotted path (`attributes.size`), so the error names it."""
    if isinstance(value, _Object):
        if value.duplicate is not None:
            return DuplicateKey(value.duplicate, path + value.duplicate)
        children = value.items()
    elif isinstance(value, list):
        children = ((str(i), item) for i, item in enumerate(value))
    else:
        return None
    for key, child in children:
        found = _first_duplicate(child, f"{path}{key}.")
        if found:
            return found
    return None


MAX_NUMBER_DIGITS = 1000   # far more than SQS takes (38 significant digits)


def _exact(number_type, unit: str):
    """A parse_int / parse_float for json.loads that keeps each number's text (see sqs_producer)."""
    def parse(text: str):
        if len(text) > MAX_NUMBER_DIGITS:
            raise ValueError(f"a number of {len(text)} {unit}; at most {MAX_NUMBER_DIGITS}")
        return number_type(text)
    return parse


_EXACT_INT, _EXACT_FRACTION = _exact(JsonInt, "digits"), _exact(JsonNumber, "characters")


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str, request_body: bool = False):
    """Parse standard JSON only: NaN, Infinity and numbers too large for a double are refused,
    since browsers cannot parse them back (one such value would break every page's live view).
    A request body also refuses keys given twice, and keeps each fraction exactly as written
    (`JsonNumber`), so a Number attribute sent as 1e2 reaches SQS as 1e2."""
    value = json.loads(text, parse_constant=_no_constants, parse_int=_EXACT_INT,
                       **({"object_pairs_hook": _keep_duplicates, "parse_float": _EXACT_FRACTION} if request_body
                          else {}))
    json.dumps(value, allow_nan=False)   # 1e400 parses to inf: refuse it here
    duplicate = _first_duplicate(value) if request_body else None
    if duplicate:
        raise duplicate
    return value


def configure_logging(settings: Settings) -> None:
    """One log format for `python app.py` and Gunicorn; leaves logging alone if already set up."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Request lines from the dev server and the embedded moto server drown the app's own log; and
    # `python app.py` is meant to run the dev server locally (containers run Gunicorn).
    werkzeug_log = logging.getLogger("werkzeug")
    werkzeug_log.setLevel(logging.WARNING)
    werkzeug_log.addFilter(lambda record: "production deployment" not in record.getMessage())
    # botocore's DEBUG output is wire-level: request parameters such as receipt handles, signed headers.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "moto"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))


def _is_json(body: str) -> bool:
    """Whether the body is standard JSON (the page tags it; the body itself is sent as it is)."""
    try:
        strict_json(body)
        return True
    except (ValueError, RecursionError):
        return False


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen there, found before the consumer starts taking messages."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    problem = _cannot_listen(settings.host, settings.port)
    if problem:
        print(f"configuration error: HOST={settings.host} PORT={settings.port}: {problem}", file=sys.stderr)
        return 2
    app = create_app(settings)
    state: SqsApp = app.extensions["sqs_app"]
    socketio: SocketIO = app.extensions["socketio"]

    stopping = []

    grace = settings.wait_time_seconds + settings.visibility_timeout
    if settings.backend == "embedded":   # see SqsApp.stop
        grace, what = EMBEDDED_STOP_SECONDS, "the messages in hand (the embedded queue ends with this process)"
    else:
        what = "the long poll in flight and the messages in hand"
    what = {(True, True): f"{what} and open /produce requests", (True, False): what,
            (False, True): "open /produce requests"}[bool(state.consumer), bool(state.producer)]
    # A burst still sending when the app stops ends at STOP_SENDING_AFTER with an answer saying how
    # many it sent; one SQS call takes at most two tries of 2 + 5 s after that.
    request_grace = STOP_SENDING_AFTER + 15

    def finish_and_exit():
        consumer_finished = state.shutdown(timeout=grace)
        requests_finished = state.wait_for_requests(timeout=request_grace)
        if not consumer_finished and settings.backend == "embedded":
            log.info("not waiting for the long poll in flight: the embedded queue ends with this process")
        elif not consumer_finished:
            log.warning("messages still in hand at exit; SQS will redeliver what was not deleted")
        if not requests_finished:
            log.warning("a /produce request was still open at exit (its body still arriving, or SQS slow to "
                        "answer): its client gets no answer")
        log.info("stopped cleanly" if requests_finished and (consumer_finished or settings.backend == "embedded")
                 else "stopped")
        logging.shutdown()
        # The dev server has no clean stop from another thread or greenlet; everything is finished.
        os._exit(0)

    def shut_down(signum, _frame):
        if stopping:  # a second Ctrl-C: quit now; SQS redelivers whatever was in flight
            log.warning("second %s: exiting without waiting", signal.Signals(signum).name)
            os._exit(1)
        stopping.append(signum)
        limit = max(grace if state.consumer else 0, request_grace if state.producer else 0)
        log.info("%s received: refusing new /produce requests, finishing %s (at most %ds; Ctrl-C again "
                 "to quit now)", signal.Signals(signum).name, what, limit)
        # Not in the handler itself: under eventlet it runs in the hub, which must keep running.
        socketio.start_background_task(finish_and_exit)

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("serving on http://%s:%d", host, settings.port)
    # Never debug=True: the reloader would start a second, hidden consumer.
    socketio.run(app, host=settings.host, port=settings.port, debug=False, use_reloader=False,
                 log_output=False, allow_unsafe_werkzeug=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
