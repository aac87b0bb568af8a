"""The SQS consumer: long-polls one queue, hands each message to a handler, deletes what it finished.

It knows SQS and nothing about Flask or Socket.IO. The web layer passes a `handler` (and, to send
each batch on in one piece, a `publish` step); a developer debugging under mirrord puts a breakpoint
in that handler (or in `_handle` below) and the message stays invisible to every other consumer
while they are paused, thanks to the visibility heartbeat.

    consumer = SqsConsumer(client, queue_url, handler=print)
    consumer.start()
    ...
    consumer.stop(timeout=10)   # stop polling, finish the messages in hand

Guarantees: a message is deleted only after its handler and the batch's publish step returned (and,
when the publish step asks for it, after its confirmation came); a handler that raises leaves the
message for redelivery (the queue's redrive policy moves poison messages to the dead-letter queue);
SQS errors never end the loop, they are retried with capped exponential backoff.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from queue import Queue
from typing import Any, Callable, Protocol

from sqs_queue import SQS_ERRORS, describe_error, is_queue_missing

log = logging.getLogger(__name__)

EMPTY_SHORT_POLL_PAUSE = 1.0   # seconds between empty receives when WAIT_TIME_SECONDS is 0


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the handler sees it. The receipt handle stays inside the consumer."""

    message_id: str
    body: str
    attributes: dict[str, dict[str, Any]]   # name -> {"type": ..., "value": str | bytes}
    receive_count: int
    sent_timestamp_ms: int | None
    group_id: str | None
    received_at: float
    receipt_handle: str = field(repr=False)

    @classmethod
    def from_sqs(cls, raw: dict, received_at: float) -> "ReceivedMessage":
        system = raw.get("Attributes", {})
        attributes = {}
        for name, attr in raw.get("MessageAttributes", {}).items():
            data_type = attr.get("DataType", "String")
            value = attr.get("BinaryValue") if data_type.startswith("Binary") else attr.get("StringValue")
            attributes[name] = {"type": data_type, "value": value}
        sent = system.get("SentTimestamp")
        return cls(
            message_id=raw["MessageId"],
            body=raw.get("Body", ""),
            attributes=attributes,
            receive_count=int(system.get("ApproximateReceiveCount", 1)),
            sent_timestamp_ms=int(sent) if sent else None,
            group_id=system.get("MessageGroupId"),
            received_at=received_at,
            receipt_handle=raw["ReceiptHandle"],
        )

    def attributes_as_text(self) -> dict[str, dict[str, str]]:
        """Attributes with binary values base64-encoded, ready for JSON."""
        return {name: {"type": a["type"],
                       "value": base64.b64encode(a["value"]).decode() if isinstance(a["value"], bytes)
                       else a["value"]}
                for name, a in self.attributes.items()}


class _HandlerFailed(Exception):
    """The handler raised for one message (already counted, logged and reported)."""


class QueueUrlSource(Protocol):
    def url(self) -> str: ...
    def forget(self) -> None: ...


class _FixedQueue:
    def __init__(self, url: str):
        self._url = url

    def url(self) -> str:
        return self._url

    def forget(self) -> None:
        pass


class Backoff:
    """Capped exponential backoff with jitter: 1, 2, 4, ... up to `cap` seconds."""

    def __init__(self, base: float = 1.0, cap: float = 30.0):
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class ConsumerStats:
    state: str = "starting"           # starting, polling, processing, backing_off, stopping, stopped
    received: int = 0
    deleted: int = 0
    failed: int = 0                   # handler raised; left for redelivery
    errors: int = 0                   # SQS calls that failed
    last_error: str | None = None
    last_poll_monotonic: float | None = None   # heartbeat: after every receive, empty ones too

    def snapshot(self) -> dict:
        return {"state": self.state, "received": self.received, "deleted": self.deleted,
                "failed": self.failed, "errors": self.errors, "last_error": self.last_error}


def _start_thread(target: Callable[[], None]) -> Any:
    thread = threading.Thread(target=target, daemon=True, name="sqs-consumer")
    thread.start()
    return thread


class SqsConsumer:
    """Polls `queue` and calls `handler(ReceivedMessage)` for each message.

    queue: a queue URL, or an object with `url()` and `forget()` (resolved on every poll, so a
        queue that does not exist yet is picked up once it does).
    handler: returns normally when the message is done (it is then deleted); raises to leave it
        for redelivery (see `retry_after`).
    publish: optional; called once per received batch, after the handlers and before the delete,
        with what the handlers returned for the messages they finished, in order. If it raises,
        none of them is deleted: all are left for redelivery. If it returns a function, the batch
        is deleted once that function has returned (it waits for a confirmation: the browsers'
        acknowledgements); the consumer calls it off the poll loop, in order, so the next receive
        does not wait for it. If that function raises, the batch is left for redelivery.
    on_event: optional observer, called as `on_event(name, details)` with names
        `received`, `processed`, `failed`, `deleted`, `batch_done` (the batch is finished: deleted or
        left for redelivery), `error`, `recovered`, `empty`, `stopped`.
    concurrency: how many long polls run at once (1-10). One keeps messages in order and a
        debugging session simple; more drain a backlog faster.
    spawn: how to run a background task; the web layer passes `socketio.start_background_task`
        so the same code runs under threading and eventlet.
    """

    def __init__(self, client, queue: str | QueueUrlSource, handler: Callable[[ReceivedMessage], Any], *,
                 publish: Callable[[list[Any]], Any] | None = None,
                 wait_time_seconds: int = 20, max_messages: int = 10, visibility_timeout: int = 30,
                 failure_visibility_timeout: int = 0, heartbeat_interval: float | None = None,
                 on_event: Callable[[str, dict], None] | None = None,
                 spawn: Callable[[Callable[[], None]], Any] = _start_thread,
                 backoff: Backoff | None = None, concurrency: int = 1):
        if not 0 <= wait_time_seconds <= 20:
            raise ValueError("wait_time_seconds must be between 0 and 20")
        if not 1 <= max_messages <= 10:
            raise ValueError("max_messages must be between 1 and 10")
        if visibility_timeout < 1:
            raise ValueError("visibility_timeout must be at least 1 second")
        if not 1 <= concurrency <= 10:
            raise ValueError("concurrency must be between 1 and 10")
        self._client = client
        self._queue = _FixedQueue(queue) if isinstance(queue, str) else queue
        self._handler = handler
        self._publish = publish
        self.wait_time_seconds = wait_time_seconds
        self.max_messages = max_messages
        self.visibility_timeout = visibility_timeout
        self.failure_visibility_timeout = failure_visibility_timeout
        # Extend well before the timeout runs out, so a slow handler never loses its message.
        self.heartbeat_interval = heartbeat_interval or max(1.0, visibility_timeout / 3)
        self._on_event = on_event or (lambda name, details: None)
        self._spawn = spawn
        self._backoff_template = backoff or Backoff()
        self.concurrency = concurrency
        self._loops_running = 0
        self.stats = ConsumerStats()
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()
        self._in_hand: dict[str, str] = {}       # receipt handle -> message id
        self._in_hand_lock = threading.Lock()
        # Batches published and waiting for their confirmation before the delete; at most two per
        # poller queued (one smooths out the confirmation round trips: drain with one poller 0.55 ->
        # 0.66 of a bare loop), so a slow confirmation holds back receiving instead of piling up messages.
        self._confirming: Queue = Queue(maxsize=2 * concurrency)
        self._confirm_loops_running = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> bool:
        """Start polling, once: later calls do nothing and return False."""
        with self._start_lock:
            if self._started:
                return False
            self._started = True
        self._loops_running = self._confirm_loops_running = self.concurrency
        for _ in range(self.concurrency):
            self._spawn(self._poll_loop)
            self._spawn(self._confirm_loop)
        self._spawn(self._heartbeat_loop)
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Stop polling; wait for the in-flight long poll and the messages in hand.

        A long poll cannot be cancelled, and abandoning it would let SQS hand it messages that nobody
        reads (invisible until their visibility timeout runs out). So the loop waits for it to return
        (at most `wait_time_seconds`) and releases what it brought at once (visibility 0) without
        handling it. Batches waiting for their confirmation are finished first. Returns False if
        `timeout` ran out first.
        """
        self._stopping.set()
        if not self._started:
            return True
        if self.stats.state != "stopped":
            self.stats.state = "stopping"
        return self._stopped.wait(timeout)

    @property
    def running(self) -> bool:
        return self._started and not self._stopped.is_set()

    def seconds_since_last_poll(self) -> float | None:
        last = self.stats.last_poll_monotonic
        return None if last is None else time.monotonic() - last

    # -- the loop ----------------------------------------------------------------------------

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, n in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def _poll_loop(self) -> None:
        log.info("consumer polling (wait %ds, up to %d messages, visibility %ds)",
                 self.wait_time_seconds, self.max_messages, self.visibility_timeout)
        backoff = Backoff(self._backoff_template.base, self._backoff_template.cap)
        try:
            while not self._stopping.is_set():
                self._poll_once(backoff)
        finally:
            with self._stats_lock:
                self._loops_running -= 1
                last = self._loops_running == 0
            if last:
                for _ in range(self.concurrency):   # the confirm loops finish what is queued, then stop
                    self._confirming.put(None)

    def _poll_once(self, backoff: Backoff) -> None:
        self.stats.state = "polling"
        try:
            queue_url = self._queue.url()
            response = self._client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=self.max_messages,
                WaitTimeSeconds=self.wait_time_seconds,
                VisibilityTimeout=self.visibility_timeout,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"],
            )
        except SQS_ERRORS as exc:
            self._sqs_error("receive", exc, backoff)
            return
        received_at = time.time()
        self.stats.last_poll_monotonic = time.monotonic()
        if backoff.failures:
            backoff.reset()
            self.stats.last_error = None
            log.info("SQS answers again; consumer resumed")
            self._on_event("recovered", {})
        raw_messages = response.get("Messages", [])
        if not raw_messages:
            self._on_event("empty", {})
            if self.wait_time_seconds == 0:
                # Short polling: pause, or an empty queue would be asked thousands of times a second.
                self._stopping.wait(EMPTY_SHORT_POLL_PAUSE)
            return
        messages = [ReceivedMessage.from_sqs(raw, received_at) for raw in raw_messages]
        self._hold(messages)
        self._count(received=len(messages))
        log.debug("received %d message(s): %s", len(messages), ", ".join(m.message_id for m in messages))
        self._on_event("received", {"count": len(messages)})
        awaiting: list[ReceivedMessage] = []
        try:
            if self._stopping.is_set():
                # Arrived after stop(): hand them straight back to the queue for another consumer.
                self._change_visibility(queue_url, messages, 0)
            else:
                self.stats.state = "processing"
                awaiting = self._process(queue_url, messages)
        finally:
            # Messages waiting for their confirmation stay in hand (the heartbeat keeps them invisible).
            self._release([m for m in messages if m not in awaiting])
            self.stats.state = "polling"
            if not awaiting:
                self._on_event("batch_done", {"count": len(messages)})

    def _process(self, queue_url: str, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """Handle, publish and delete one batch; returns the messages left waiting for their confirmation."""
        done, results, failed = [], [], []
        for message in messages:
            try:
                results.append(self._handle(message))
                done.append(message)
            except _HandlerFailed:
                failed.append(message)
        confirmation = None
        if done and self._publish:
            try:
                confirmation = self._publish(results)
            except Exception as exc:  # user code again: nothing of this batch is done
                self._count(failed=len(done))
                log.warning("publishing %d message(s) failed: %s", len(done), describe_error(exc))
                for message in done:
                    self._on_event("failed", {"message": message, "error": describe_error(exc)})
                failed, done = failed + done, []
        if failed:
            self._retry_later(queue_url, failed)
        if done and callable(confirmation):
            self._confirming.put((confirmation, queue_url, done, len(messages)))
            return done
        if done:
            self._delete(queue_url, done)
        return []

    def _confirm_loop(self) -> None:
        """Deletes published batches once their confirmation came, oldest first, while the poll loops
        go on receiving (one confirm loop per poll loop). The last one to end, after the poll loops,
        marks the consumer stopped."""
        while (item := self._confirming.get()) is not None:
            confirmation, queue_url, messages, batch_size = item
            try:
                confirmation()
            except Exception as exc:  # user code: the batch was not confirmed, so it is not done
                self._count(failed=len(messages))
                log.warning("confirming %d message(s) failed: %s", len(messages), describe_error(exc))
                for message in messages:
                    self._on_event("failed", {"message": message, "error": describe_error(exc)})
                self._retry_later(queue_url, messages)
            else:
                self._delete(queue_url, messages)
            finally:
                self._release(messages)
                self._on_event("batch_done", {"count": batch_size})
        with self._stats_lock:
            self._confirm_loops_running -= 1
            if self._confirm_loops_running:
                return
        self.stats.state = "stopped"
        self._stopped.set()
        self._on_event("stopped", {})
        log.info("consumer stopped")

    def _handle(self, message: ReceivedMessage) -> Any:
        """Run the handler for one message and return its result; _HandlerFailed if it raised."""
        try:
            result = self._handler(message)
        except Exception as exc:  # the handler is user code: any failure means "not done"
            self._count(failed=1)
            log.warning("handler failed for message %s (receive count %d): %s",
                        message.message_id, message.receive_count, describe_error(exc))
            self._on_event("failed", {"message": message, "error": describe_error(exc)})
            raise _HandlerFailed from exc
        self._on_event("processed", {"message": message})
        return result

    def _delete(self, queue_url: str, messages: list[ReceivedMessage]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)]
        try:
            response = self._client.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        except SQS_ERRORS as exc:
            # Not deleted means redelivered later: at-least-once, never lost.
            self._sqs_error("delete", exc)
            return
        failed = response.get("Failed", [])
        for failure in failed:
            self._count(errors=1)
            self.stats.last_error = f"delete failed: {failure.get('Code')}: {failure.get('Message', '')}"
            log.warning("delete of message %s failed: %s", messages[int(failure["Id"])].message_id,
                        self.stats.last_error)
        deleted = len(messages) - len(failed)
        self._count(deleted=deleted)
        self._on_event("deleted", {"count": deleted, "failed": len(failed)})

    def retry_after(self, receive_count: int) -> int:
        """Seconds until a message that failed on its `receive_count`-th receive is received again:
        `failure_visibility_timeout` after the first failure, then 1, 3, 7, 15 ... more (doubling), at
        most the visibility timeout. A poison message on a queue without a dead-letter queue (or with a
        high maxReceiveCount) is retried ever more slowly instead of spinning."""
        return min(self.visibility_timeout, self.failure_visibility_timeout + 2 ** min(receive_count - 1, 16) - 1)

    def _retry_later(self, queue_url: str, messages: list[ReceivedMessage]) -> None:
        by_delay: dict[int, list[ReceivedMessage]] = {}
        for message in messages:
            by_delay.setdefault(self.retry_after(message.receive_count), []).append(message)
        for delay, batch in by_delay.items():
            if delay < self.visibility_timeout:   # otherwise the visibility timeout does it anyway
                self._change_visibility(queue_url, batch, delay)

    def _change_visibility(self, queue_url: str, messages: list[ReceivedMessage], seconds: int) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                   for i, m in enumerate(messages)]
        try:
            response = self._client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except SQS_ERRORS as exc:
            self._sqs_error("change visibility", exc)
            return
        for failure in response.get("Failed", []):
            log.warning("visibility change failed for %s: %s",
                        messages[int(failure["Id"])].message_id, failure.get("Code"))

    def _sqs_error(self, action: str, exc: BaseException, backoff: Backoff | None = None) -> None:
        """Count and report an SQS failure; with `backoff`, wait before the loop tries again."""
        self._count(errors=1)
        self.stats.last_error = f"{action}: {describe_error(exc)}"
        if is_queue_missing(exc):
            self._queue.forget()   # look it up (or create it) again on the next poll
        if backoff is None:
            log.warning("SQS %s failed: %s", action, describe_error(exc))
            self._on_event("error", {"action": action, "error": self.stats.last_error})
            return
        delay = backoff.next_delay()
        log.warning("SQS %s failed: %s; retrying in %.1fs", action, describe_error(exc), delay)
        self.stats.state = "backing_off"
        self._on_event("error", {"action": action, "error": self.stats.last_error})
        deadline = time.monotonic() + delay
        while not self._stopping.is_set() and time.monotonic() < deadline:
            # The loop is alive while it waits: keep the health heartbeat fresh.
            self.stats.last_poll_monotonic = time.monotonic()
            self._stopping.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    # -- messages in hand and the visibility heartbeat --------------------------------------

    def _hold(self, messages: list[ReceivedMessage]) -> None:
        with self._in_hand_lock:
            for m in messages:
                self._in_hand[m.receipt_handle] = m.message_id

    def _release(self, messages: list[ReceivedMessage]) -> None:
        with self._in_hand_lock:
            for m in messages:
                self._in_hand.pop(m.receipt_handle, None)

    def _heartbeat_loop(self) -> None:
        """Keep messages in hand invisible while their handler runs (a breakpoint, a slow job)."""
        while not self._stopped.is_set():
            self._stopped.wait(self.heartbeat_interval)
            with self._in_hand_lock:
                handles = list(self._in_hand.items())
            if not handles:
                continue
            try:
                queue_url = self._queue.url()
                for start in range(0, len(handles), 10):
                    chunk = handles[start:start + 10]
                    self._client.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
                        {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": self.visibility_timeout}
                        for i, (handle, _) in enumerate(chunk)])
                log.debug("extended visibility of %d message(s) in hand", len(handles))
            except SQS_ERRORS as exc:
                log.warning("visibility heartbeat failed: %s", describe_error(exc))
