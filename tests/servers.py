"""Real SQS servers, the app as a process, and a recording Socket.IO client: the parts the tests and
the benchmarks (bench/) share. Plain functions and classes, no pytest here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import boto3
import requests
import socketio

ROOT = Path(__file__).resolve().parent.parent
TEST_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


class SqsEndpoint:
    """A running SQS server process and helpers to make queues on it."""

    def __init__(self, name: str, url: str):
        self.name, self.url = name, url
        self.client = boto3.client("sqs", endpoint_url=url, region_name="us-east-1",
                                   aws_access_key_id="test", aws_secret_access_key="test")

    def queue_name(self, prefix: str = "t", fifo: bool = False) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        return name + ".fifo" if fifo else name

    def create_queue(self, fifo: bool = False, max_receive_count: int | None = None, **attributes) -> str:
        name = self.queue_name(fifo=fifo)
        attrs = {k: str(v) for k, v in attributes.items()}
        if fifo:
            attrs["FifoQueue"] = "true"
        if max_receive_count:
            dlq = self.client.create_queue(QueueName=name.replace(".fifo", "") + "-dlq" + (".fifo" if fifo else ""),
                                           Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
            arn = self.client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attrs["RedrivePolicy"] = f'{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive_count}"}}'
        return self.client.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]

    def depth(self, queue_url: str) -> int:
        attrs = self.client.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def in_flight(self, queue_url: str) -> int:
        """Messages received and neither deleted nor visible again yet."""
        attrs = self.client.get_queue_attributes(QueueUrl=queue_url,
                                                 AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, queue_url: str, wait: float = 1) -> list[dict]:
        """Receive (and delete) everything currently visible."""
        found = []
        while True:
            batch = self.client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=int(wait),
                                                MessageAttributeNames=["All"],
                                                MessageSystemAttributeNames=["All"]).get("Messages", [])
            if not batch:
                return found
            found.extend(batch)
            self.client.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


def start_moto_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"), 15, "moto server")
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def localstack_python() -> str | None:
    candidates = [os.environ.get("LOCALSTACK_PYTHON"), str(ROOT / ".venv-localstack" / "bin" / "python")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return None



class LocalStack:
    """A LocalStack process (SQS only) on a free port, with its own volume directory."""

    def __init__(self, python: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.volume = tempfile.mkdtemp(prefix="localstack-")
        env = {**os.environ, "SERVICES": "sqs", "GATEWAY_LISTEN": f"127.0.0.1:{self.port}", "DNS_ADDRESS": "0",
               "LOCALSTACK_VOLUME_DIR": self.volume, "EAGER_SERVICE_LOADING": "1", "SKIP_SSL_CERT_DOWNLOAD": "1",
               "DISABLE_EVENTS": "1", "SQS_ENDPOINT_STRATEGY": "path", "LOCALSTACK_HOST": f"127.0.0.1:{self.port}"}
        self.log_path = Path(self.volume) / "localstack.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([python, "-m", "localstack.runtime.main"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.proc.poll() is None and http_ok(f"{self.url}/_localstack/health"), 60,
                       "LocalStack health")
        except AssertionError:
            self.stop()
            raise RuntimeError(f"LocalStack did not start:\n{self.log_path.read_text()[-3000:]}") from None

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)
        shutil.rmtree(self.volume, ignore_errors=True)


# What the container image runs (the Dockerfile's CMD), with this venv's Python.
GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"]


class AppProcess:
    """`python app.py` (or `command`, such as GUNICORN) with a given environment, as a user (or a
    container) runs it."""

    def __init__(self, env: dict[str, str], command: list[str] | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_file = tempfile.NamedTemporaryFile(prefix="app-", suffix=".log", delete=False)
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("AWS_", "QUEUE_", "APP_", "SQS_")) and k not in ("PORT", "HOST")}
        # Short long polls by default: shutdown waits for the poll in flight.
        self.env = {**clean, "PORT": str(self.port), "PYTHONUNBUFFERED": "1", "WAIT_TIME_SECONDS": "2", **env}
        self.proc = subprocess.Popen(command or [sys.executable, "app.py"], cwd=ROOT, env=self.env,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 30) -> "AppProcess":
        wait_until(lambda: self.proc.poll() is None and http_ok(self.base_url + "/healthz"), timeout,
                   f"app on {self.base_url}\n{self.logs()}")
        return self

    def wait_ready(self, timeout: float = 30) -> "AppProcess":
        wait_until(lambda: http_ok(self.base_url + "/readyz"), timeout, f"readiness\n{self.logs()}")
        return self

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.base_url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.base_url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def logs(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def stop(self, timeout: float = 40) -> int:
        return stop_process(self.proc, timeout)


def endpoint_env(endpoint: SqsEndpoint, queue_name: str, **extra) -> dict:
    return {**TEST_ENV, "AWS_ENDPOINT_URL": endpoint.url, "QUEUE_NAME": queue_name, **extra}


class Listener:
    """A real python-socketio client that records every event it gets."""

    def __init__(self, base_url: str, transports=("websocket",)):
        self.events: list[tuple[str, object]] = []
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        self.client.on("*", self._record)
        self.client.connect(base_url, transports=list(transports), wait_timeout=10)

    def _record(self, event, data=None):
        with self._lock:
            self.events.append((event, data))

    def of(self, event: str) -> list:
        with self._lock:
            return [data for name, data in self.events if name == event]

    def messages(self) -> list[dict]:
        """Every message from the `sqs_messages` events (one per received batch), in arrival order."""
        return [m for batch in self.of("sqs_messages") for m in batch["messages"]]

    def wait_messages(self, count: int, timeout: float = 30) -> list[dict]:
        return wait_until(lambda: len(self.messages()) >= count and self.messages(), timeout,
                          f"{count} messages (have {len(self.messages())})")

    def close(self):
        self.client.disconnect()




class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of an SQS endpoint, whose path the test can cut and restore.

    Cut: open connections are reset and new ones are refused (closed at once), as when a network
    path to SQS goes away."""

    def __init__(self, target_url: str):
        host, port = target_url.removeprefix("http://").split(":")
        self._target = (host, int(port))
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._open = threading.Event()
        self._open.set()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.cut()
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._conns.discard(source)
                self._conns.discard(sink)
