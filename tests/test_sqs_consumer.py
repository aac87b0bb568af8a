"""The consumer alone, against a real moto server process: delete only after success, redelivery
and dead-lettering on failure, the visibility heartbeat, backoff and recovery, clean stop."""

import threading
import time

import boto3
import pytest
from botocore.config import Config

from sqs_consumer import Backoff, SqsConsumer
from tests.conftest import free_port, start_moto_server, stop_process, wait_until


def make_consumer(endpoint, queue_url, handler, **kwargs):
    client = boto3.client("sqs", endpoint_url=endpoint.url if hasattr(endpoint, "url") else endpoint,
                          region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test",
                          config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1))
    kwargs.setdefault("wait_time_seconds", 1)
    return SqsConsumer(client, queue_url, handler, **kwargs)


@pytest.fixture
def consumers():
    made = []
    yield made
    for consumer in made:
        consumer.stop(timeout=5)


def test_handled_messages_are_deleted(moto_endpoint, consumers):
    queue = moto_endpoint.create_queue()
    for i in range(15):
        moto_endpoint.client.send_message(QueueUrl=queue, MessageBody=f"m{i}",
                                          MessageAttributes={"n": {"DataType": "Number", "StringValue": str(i)}})
    seen = []
    consumer = make_consumer(moto_endpoint, queue, seen.append)
    consumers.append(consumer)
    assert consumer.start() is True
    assert consumer.start() is False  # started exactly once
    wait_until(lambda: consumer.stats.deleted == 15, 15, "15 deletes")
    assert sorted(m.body for m in seen) == sorted(f"m{i}" for i in range(15))
    assert all(m.attributes["n"]["type"] == "Number" and m.receive_count == 1 and m.sent_timestamp_ms for m in seen)
    assert moto_endpoint.depth(queue) == 0


def test_a_failing_handler_leaves_the_message_and_the_dlq_takes_it(moto_endpoint, consumers):
    queue = moto_endpoint.create_queue(max_receive_count=3)
    dlq = queue + "-dlq"
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="poison")
    attempts = []

    def handler(message):
        attempts.append(message.receive_count)
        raise RuntimeError("cannot handle this")

    events = []
    consumer = make_consumer(moto_endpoint, queue, handler,
                             on_event=lambda name, details: events.append(name))
    consumers.append(consumer)
    consumer.start()
    wait_until(lambda: moto_endpoint.depth(dlq) == 1, 20, "the message in the dead-letter queue")
    assert attempts == [1, 2, 3]
    assert consumer.stats.failed == 3 and consumer.stats.deleted == 0
    assert events.count("failed") == 3
    assert moto_endpoint.drain(dlq)[0]["Body"] == "poison"


def test_publish_gets_each_batch_in_order_before_it_is_deleted(moto_endpoint, consumers):
    queue = moto_endpoint.create_queue()
    moto_endpoint.client.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(6)])
    batches, depth_at_publish, handled = [], [], []

    def handler(message):
        handled.append(message.body.upper())
        if message.body == "m3":
            raise RuntimeError("not this one")
        return message.body.upper()

    def publish(results):
        depth_at_publish.append(moto_endpoint.depth(queue))
        batches.append(results)

    consumer = make_consumer(moto_endpoint, queue, handler, publish=publish, failure_visibility_timeout=30)
    consumers.append(consumer)
    consumer.start()
    wait_until(lambda: consumer.stats.deleted == 5, 15, "5 deletes")
    published = [r for batch in batches for r in batch]
    assert sorted(published) == ["M0", "M1", "M2", "M4", "M5"]
    assert published == [r for r in handled if r != "M3"], "in the order the handler saw them"
    assert depth_at_publish[0] == 6, "nothing deleted before publish returned"
    assert consumer.stats.failed == 1


def test_a_failing_publish_deletes_nothing_of_its_batch(moto_endpoint, consumers):
    queue = moto_endpoint.create_queue()
    moto_endpoint.client.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)])
    calls, events = [], []

    def publish(results):
        calls.append(results)
        if len(calls) == 1:
            raise ConnectionError("browsers unreachable")

    consumer = make_consumer(moto_endpoint, queue, lambda m: m.body, publish=publish,
                             on_event=lambda name, details: events.append((name, details)))
    consumers.append(consumer)
    consumer.start()
    wait_until(lambda: consumer.stats.deleted == 3, 20, "3 deletes after the retry")
    assert sorted(calls[0]) == sorted(r for batch in calls[1:] for r in batch), "the whole batch came again"
    failures = [d for name, d in events if name == "failed"]
    assert len(failures) == len(calls[0]) and all("browsers unreachable" in d["error"] for d in failures)
    assert consumer.stats.failed == len(calls[0])
    assert moto_endpoint.depth(queue) == 0


def test_a_batch_waiting_for_its_confirmation_is_kept_invisible_and_deleted_after_it(moto_endpoint, consumers):
    """publish may return a wait (the browsers' acknowledgements): the batch is deleted only after it
    returned, the heartbeat keeps it invisible meanwhile, and the next receive does not wait for it."""
    queue = moto_endpoint.create_queue()
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="first")
    confirmed, published = threading.Event(), []

    def publish(results):
        published.append(results)
        return lambda: confirmed.wait(20)

    consumer = make_consumer(moto_endpoint, queue, lambda m: m.body, publish=publish,
                             visibility_timeout=2, heartbeat_interval=0.5)
    consumers.append(consumer)
    consumer.start()
    wait_until(lambda: published == [["first"]], 10, "the first batch published")
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="second")
    wait_until(lambda: len(published) == 2, 10, "the next batch received while the first waits")
    time.sleep(3)   # past the visibility timeout: only the heartbeat keeps them hidden
    assert moto_endpoint.client.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages", []) == []
    assert consumer.stats.deleted == 0, "nothing deleted before its confirmation"
    confirmed.set()
    wait_until(lambda: consumer.stats.deleted == 2, 10, "both deleted once confirmed")
    assert moto_endpoint.depth(queue) == 0


def test_a_confirmation_that_fails_leaves_its_batch_for_redelivery(moto_endpoint, consumers):
    queue = moto_endpoint.create_queue()
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="unconfirmed")
    calls, events = [], []

    def publish(results):
        calls.append(results)

        def confirmation():
            if len(calls) == 1:
                raise TimeoutError("no browser confirmed")
        return confirmation

    consumer = make_consumer(moto_endpoint, queue, lambda m: m.receive_count, publish=publish,
                             failure_visibility_timeout=1,
                             on_event=lambda name, details: events.append((name, details)))
    consumers.append(consumer)
    consumer.start()
    wait_until(lambda: consumer.stats.deleted == 1, 20, "the delete after the second delivery")
    assert calls == [[1], [2]], "delivered again, marked as a second receive"
    assert [d["error"] for name, d in events if name == "failed"] == ["TimeoutError: no browser confirmed"]
    assert consumer.stats.failed == 1


def test_stop_waits_for_the_batch_being_confirmed(moto_endpoint):
    queue = moto_endpoint.create_queue()
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="confirming")
    published = threading.Event()

    def publish(results):
        published.set()
        return lambda: time.sleep(1.5)

    consumer = make_consumer(moto_endpoint, queue, lambda m: m.body, publish=publish)
    consumer.start()
    assert published.wait(10)
    assert consumer.stop(timeout=10) is True
    assert consumer.stats.deleted == 1 and consumer.stats.state == "stopped"
    assert moto_endpoint.depth(queue) == 0


def test_heartbeat_keeps_a_slow_message_invisible(moto_endpoint, consumers):
    queue = moto_endpoint.create_queue()
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="slow")
    release = threading.Event()
    started = threading.Event()

    def handler(message):  # a developer paused at a breakpoint
        started.set()
        release.wait(10)

    consumer = make_consumer(moto_endpoint, queue, handler, visibility_timeout=2, heartbeat_interval=0.5)
    consumers.append(consumer)
    consumer.start()
    assert started.wait(10)
    # Three visibility timeouts later, nobody else can receive it.
    time.sleep(6)
    other = moto_endpoint.client.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages", [])
    assert other == []
    release.set()
    wait_until(lambda: consumer.stats.deleted == 1, 10, "the delete")


def test_without_heartbeat_the_message_would_come_back(moto_endpoint):
    """The control for the test above: the visibility timeout alone does expire."""
    queue = moto_endpoint.create_queue()
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="slow")
    first = moto_endpoint.client.receive_message(QueueUrl=queue, VisibilityTimeout=2)["Messages"]
    assert first
    time.sleep(3)
    assert moto_endpoint.client.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages")


def test_stop_finishes_the_message_in_hand(moto_endpoint):
    queue = moto_endpoint.create_queue()
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="in hand")
    started = threading.Event()
    done = []

    def handler(message):
        started.set()
        time.sleep(1)
        done.append(message.body)

    consumer = make_consumer(moto_endpoint, queue, handler, wait_time_seconds=1)
    consumer.start()
    assert started.wait(10)
    assert consumer.stop(timeout=10) is True
    assert done == ["in hand"]
    wait_until(lambda: consumer.stats.state == "stopped", 5, "the loop to end")
    assert consumer.stats.deleted == 1 and moto_endpoint.depth(queue) == 0


def test_endpoint_down_backs_off_then_resumes_by_itself(consumers):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    seen = []
    consumer = make_consumer(url, f"{url}/123456789012/later", seen.append,
                             backoff=Backoff(base=0.2, cap=1.0))
    consumers.append(consumer)
    consumer.start()
    wait_until(lambda: consumer.stats.errors >= 3, 10, "repeated receive errors")
    assert consumer.stats.state == "backing_off" and "receive" in consumer.stats.last_error
    assert consumer.running  # the loop survives
    server = start_moto_server(port)
    try:
        client = boto3.client("sqs", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        queue = client.create_queue(QueueName="later")["QueueUrl"]
        assert queue.endswith("/later")
        client.send_message(QueueUrl=queue, MessageBody="after the outage")
        wait_until(lambda: [m.body for m in seen] == ["after the outage"], 15, "the message after recovery")
        assert consumer.stats.last_error is None
    finally:
        stop_process(server)


def test_backoff_doubles_up_to_its_cap():
    backoff = Backoff(base=1, cap=8)
    delays = [backoff.next_delay() for _ in range(6)]
    assert [round(d / nominal, 1) <= 1.0 for d, nominal in zip(delays, [1, 2, 4, 8, 8, 8])] == [True] * 6
    assert all(0.8 * n <= d <= n for d, n in zip(delays, [1, 2, 4, 8, 8, 8]))
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_delete_failures_reported_by_sqs_are_counted():
    """delete_message_batch answers 200 with a Failed list; it must be read (unit test, fake client)."""

    class Client:
        def __init__(self):
            self.calls = 0

        def receive_message(self, **kwargs):
            self.calls += 1
            if self.calls > 1:
                time.sleep(0.05)
                return {}
            return {"Messages": [{"MessageId": "a", "ReceiptHandle": "r1", "Body": "1"},
                                 {"MessageId": "b", "ReceiptHandle": "r2", "Body": "2"}]}

        def delete_message_batch(self, QueueUrl, Entries):
            return {"Successful": [{"Id": Entries[0]["Id"]}],
                    "Failed": [{"Id": Entries[1]["Id"], "Code": "ReceiptHandleIsInvalid", "SenderFault": True}]}

    consumer = SqsConsumer(Client(), "http://q", lambda m: None, wait_time_seconds=0)
    consumer.start()
    wait_until(lambda: consumer.stats.deleted == 1 and consumer.stats.errors == 1, 5, "the partial delete")
    assert "ReceiptHandleIsInvalid" in consumer.stats.last_error
    consumer.stop(timeout=2)


@pytest.mark.parametrize("kwargs", [{"wait_time_seconds": 21}, {"max_messages": 0}, {"max_messages": 11},
                                    {"visibility_timeout": 0}])
def test_options_are_validated_up_front(kwargs):
    with pytest.raises(ValueError):
        SqsConsumer(object(), "http://q", print, **kwargs)


def test_short_polling_an_empty_queue_pauses_between_receives():
    """WAIT_TIME_SECONDS=0 must not spin: one empty receive per pause, not thousands a second."""
    calls = []

    class Client:
        def receive_message(self, **kwargs):
            calls.append(kwargs["WaitTimeSeconds"])
            return {}

    consumer = SqsConsumer(Client(), "http://q", print, wait_time_seconds=0)
    consumer.start()
    time.sleep(2.5)
    consumer.stop(timeout=3)
    assert 2 <= len(calls) <= 4 and set(calls) == {0}


def test_retries_of_a_failing_message_back_off_instead_of_spinning(moto_endpoint, consumers):
    """No dead-letter queue: a message whose handler always fails is received at once again after its
    first failure, then after 1, 3, 7 ... seconds, never more than the visibility timeout apart."""
    queue = moto_endpoint.create_queue()   # no redrive policy
    moto_endpoint.client.send_message(QueueUrl=queue, MessageBody="poison")
    calls: list[float] = []

    def handler(message):
        calls.append(time.monotonic())
        raise RuntimeError("always fails")

    consumer = make_consumer(moto_endpoint, queue, handler, visibility_timeout=5)
    consumers.append(consumer)
    assert [consumer.retry_after(n) for n in (1, 2, 3, 4, 5, 40)] == [0, 1, 3, 5, 5, 5]
    consumer.start()
    time.sleep(6)
    consumer.stop(5)
    # receives at about 0, 0, 1 and 4 s: four, where an immediate retry made hundreds
    assert 3 <= len(calls) <= 5, len(calls)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[-1] >= 2, gaps
