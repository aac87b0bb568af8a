"""End-to-end latency at a steady 50 messages per second: from the `POST /produce` answer to the
message's `sqs_messages` event at a Socket.IO client. Baseline in the same run: send_message answered, to the
message returned by a long-polling receive. Targets: p50 <= 20 ms, p99 <= 100 ms.

    .venv/bin/python -m bench.latency [SECONDS] [ASYNC_MODE]
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import requests

from bench.common import LeanClient, localstack, report
from tests.servers import AppProcess, endpoint_env, wait_until

RATE = 50


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def paced(count: int, send) -> None:
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(i)


def baseline_latency(endpoint, seconds: int) -> list[float]:
    url = endpoint.client.create_queue(QueueName=endpoint.queue_name("lat"))["QueueUrl"]
    import boto3

    receiver = boto3.client("sqs", endpoint_url=endpoint.url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")
    sent_at: dict[str, float] = {}
    received_at: dict[str, float] = {}
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            for m in receiver.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              MessageAttributeNames=["All"]).get("Messages", []):
                received_at[m["MessageId"]] = time.perf_counter()
                receiver.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()

    def send(i):
        message_id = endpoint.client.send_message(QueueUrl=url, MessageBody=f"m{i}")["MessageId"]
        sent_at[message_id] = time.perf_counter()

    paced(seconds * RATE, send)
    wait_until(lambda: set(sent_at) <= set(received_at), 30, "baseline receives")
    stop.set()
    return [received_at[i] - sent_at[i] for i in sent_at]


def app_latency(endpoint, seconds: int, async_mode: str) -> list[float]:
    app = AppProcess(endpoint_env(endpoint, endpoint.queue_name("lat"), ASYNC_MODE=async_mode, LOG_LEVEL="WARNING",
                                  WAIT_TIME_SECONDS="20"))
    try:
        app.wait_ready()
        client = LeanClient(app.base_url)
        session = requests.Session()
        answered_at: dict[str, float] = {}

        def send(i):
            response = session.post(app.base_url + "/produce", json={"message": f"m{i}"}, timeout=10)
            answered_at[response.json()["message_ids"][0]] = time.perf_counter()

        time.sleep(1)   # the consumer is inside its long poll, as in steady use
        paced(seconds * RATE, send)
        wait_until(lambda: set(answered_at) <= set(client.received_at), 30, "app events")
        client.close()
        return [client.received_at[i] - answered_at[i] for i in answered_at]
    finally:
        app.stop()


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    async_mode = sys.argv[2] if len(sys.argv) > 2 else "threading"
    with localstack() as endpoint:
        base = percentiles(baseline_latency(endpoint, seconds))
        app = percentiles(app_latency(endpoint, seconds, async_mode))
        report(f"End-to-end latency at {RATE} msg/s for {seconds} s on LocalStack, {async_mode}", [
            ("p50 latency (ms)", app[0], base[0], "", "app <= 20 ms"),
            ("p99 latency (ms)", app[1], base[1], "", "app <= 100 ms"),
        ])


if __name__ == "__main__":
    sys.exit(main())
