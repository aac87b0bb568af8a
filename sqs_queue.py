"""Where the queue lives: the SQS backend, the boto3 clients for it, and the queue itself.

Three backends, chosen in `settings.py`:
- embedded: a moto server started in this process on a free local port, so that
  `python app.py` works with no Docker and no AWS account;
- endpoint: whatever `AWS_ENDPOINT_URL(_SQS)` names, e.g. LocalStack;
- aws: real AWS through boto3's standard credential chain.

`SqsQueue` resolves the queue URL from `QUEUE_URL` or `QUEUE_NAME` (the variable that mirrord's
queue splitting rewrites), creating the queue and its dead-letter queue only where that is expected.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from settings import Settings

log = logging.getLogger(__name__)

SQS_ERRORS = (BotoCoreError, ClientError)
# Error codes meaning "that queue is not there" (the JSON and the query protocol spell it differently).
QUEUE_MISSING_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
# A failed lookup is answered from memory for this long, instead of being repeated for each caller.
FAILURE_MEMORY_SECONDS = 5
TEST_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def is_queue_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in QUEUE_MISSING_CODES


def describe_error(exc: BaseException) -> str:
    """One short line for logs, the page and JSON errors; never a traceback or an HTML page."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        text = f"{err.get('Code', 'Error')}: {err.get('Message', '')}".rstrip(": ")
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(re.sub(r"<[^>]*>", " ", text).split())   # a server's HTML error page, flattened
    return text if len(text) <= 300 else text[:297] + "..."


class QueueBusy(Exception):
    """The queue is being looked up by another caller right now (readiness does not wait)."""


def _cheapen_moto_clock() -> None:
    """moto's SQS model reads the clock through datetime arithmetic (about 10 us a call) for every
    queued message on every send and receive, to count visible messages. With a thousand messages
    queued, one SendMessageBatch took 0.2 s. Reading `time.time()` instead gives the same values
    (seconds and milliseconds since the epoch, now) about twenty times cheaper."""
    import time

    from moto.sqs import models

    if getattr(models, "_sqs_demo_fast_clock", False):
        return
    slow_seconds, slow_millis = models.unix_time, models.unix_time_millis
    models.unix_time = lambda dt=None: time.time() if dt is None else slow_seconds(dt)
    models.unix_time_millis = lambda dt=None: time.time() * 1000.0 if dt is None else slow_millis(dt)
    models._sqs_demo_fast_clock = True


class EmbeddedSqs:
    """A moto SQS server inside this process, on 127.0.0.1 and a port the OS picks."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer  # imported only when the embedded backend is used

        _cheapen_moto_clock()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()


def _credentials(settings: Settings) -> dict:
    """Dummy credentials for local endpoints that have none; never for real AWS."""
    if settings.backend == "aws":
        return {}
    if settings.backend == "endpoint" and (
        os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")
        or os.path.exists(os.path.expanduser(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")))
    ):
        return {}
    return dict(TEST_CREDENTIALS)


def make_client(settings: Settings, endpoint_url: str | None, *, read_timeout: float,
                connect_timeout: float = 3, max_attempts: int = 3):
    """A boto3 SQS client for the configured backend.

    The read timeout must outlast a long poll (WaitTimeSeconds), so the poller gets its own client.
    """
    config = Config(
        region_name=settings.region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=20,
    )
    return boto3.session.Session().client("sqs", endpoint_url=endpoint_url, config=config,
                                          **_credentials(settings))


@dataclass(frozen=True)
class QueueInfo:
    """What the producer and the page need to know about the queue."""

    url: str
    arn: str
    is_fifo: bool
    content_based_deduplication: bool
    max_message_size: int
    dead_letter_arn: str | None
    max_receive_count: int | None


class SqsQueue:
    """The app's queue: its URL and attributes, looked up on first use and cached.

    Lookups raise botocore errors as they come; callers decide whether to retry (the consumer
    backs off, the producer answers 503). `forget()` drops the cache after "queue missing".
    """

    def __init__(self, client, settings: Settings, endpoint_url: str | None):
        self._client = client
        self._settings = settings
        self.endpoint_url = endpoint_url
        self._info: QueueInfo | None = None
        self._last_failure: tuple[float, BaseException] | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        if self._settings.queue_url:
            return self._settings.queue_url.rstrip("/").rsplit("/", 1)[-1]
        return self._settings.queue_name

    def describe(self) -> dict:
        """Backend, endpoint, region and queue, for the start-up log, the page and error answers."""
        info = self._info
        return {
            "backend": self._settings.backend,
            "endpoint": self.endpoint_url or f"AWS SQS in {self._settings.region}",
            "region": self._settings.region,
            "queue_name": self.name,
            "queue_url": info.url if info else self._settings.queue_url,
            "fifo": info.is_fifo if info else self.name.endswith(".fifo"),
        }

    def info(self, client=None, wait: bool = True) -> QueueInfo:
        """The queue's URL and attributes, resolved once (with `client` if given, e.g. a fast one).

        With wait=False, raise QueueBusy instead of waiting for a lookup already under way."""
        info = self._info
        if info is None:
            if not self._lock.acquire(blocking=wait):
                raise QueueBusy(f"still looking up queue {self.name}")
            try:
                if self._info is None:
                    failed = self._last_failure
                    if failed and time.monotonic() - failed[0] < FAILURE_MEMORY_SECONDS:
                        # It just failed for someone else: do not make every caller wait for it again.
                        raise failed[1]
                    try:
                        self._info = self._resolve(client or self._client)
                    except SQS_ERRORS as exc:
                        self._last_failure = (time.monotonic(), exc)
                        raise
                info = self._info
            finally:
                self._lock.release()
        return info

    @property
    def cached(self) -> QueueInfo | None:
        """The queue's info if already looked up; never calls SQS."""
        return self._info

    @property
    def dead_letter_queue_name(self) -> str | None:
        info = self._info
        return info.dead_letter_arn.rsplit(":", 1)[-1] if info and info.dead_letter_arn else None

    def url(self) -> str:
        return self.info().url

    def forget(self) -> None:
        self._info = None

    def _resolve(self, client) -> QueueInfo:
        url = self._settings.queue_url
        if not url:
            try:
                url = client.get_queue_url(QueueName=self.name)["QueueUrl"]
            except ClientError as exc:
                if not (is_queue_missing(exc) and self._settings.create_queue):
                    raise
                url = self._create(client)
        attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs.get("RedrivePolicy") or "{}")
        info = QueueInfo(
            url=url,
            arn=attrs.get("QueueArn", ""),
            is_fifo=attrs.get("FifoQueue", "false").lower() == "true",
            content_based_deduplication=attrs.get("ContentBasedDeduplication", "false").lower() == "true",
            max_message_size=int(attrs.get("MaximumMessageSize", 262_144)),
            dead_letter_arn=redrive.get("deadLetterTargetArn"),
            max_receive_count=int(redrive["maxReceiveCount"]) if "maxReceiveCount" in redrive else None,
        )
        log.info("queue resolved: %s (fifo=%s, max size %d bytes, dead-letter queue %s)",
                 info.url, info.is_fifo, info.max_message_size, info.dead_letter_arn or "none")
        return info

    def _create(self, client) -> str:
        """Create the queue and its dead-letter queue (`<name>-dlq`) with a redrive policy."""
        name = self.name
        fifo = name.endswith(".fifo")
        dlq_name = f"{name[:-5]}-dlq.fifo" if fifo else f"{name}-dlq"
        fifo_attrs = {"FifoQueue": "true"} if fifo else {}
        dlq_url = self._create_queue(client, dlq_name, fifo_attrs)
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn,
                              "maxReceiveCount": str(self._settings.max_receive_count)})
        url = self._create_queue(client, name, {**fifo_attrs, "RedrivePolicy": redrive})
        log.info("created queue %s with dead-letter queue %s (maxReceiveCount %d)",
                 name, dlq_name, self._settings.max_receive_count)
        return url

    @staticmethod
    def _create_queue(client, name: str, attributes: dict) -> str:
        try:
            return client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except ClientError as exc:
            # Another process (the producer next to this consumer) created it with other attributes.
            if exc.response.get("Error", {}).get("Code") in ("QueueAlreadyExists", "QueueNameExists"):
                return client.get_queue_url(QueueName=name)["QueueUrl"]
            raise

