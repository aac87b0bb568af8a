"""Consumer drain: N messages prefilled on LocalStack, drained by the app (consumer mode, 5 Socket.IO
clients connected, counted at the clients) and, in the same run, by a plain boto3 loop
(receive 10, delete_message_batch). Target: app / baseline >= 1.0 (stretch 1.5).

    .venv/bin/python -m bench.consumer_drain [N] [ASYNC_MODE]
"""

from __future__ import annotations

import sys
import time

from bench.common import localstack, prefill, report
from bench.common import LeanClient
from tests.servers import AppProcess, endpoint_env, wait_until

CLIENTS = 5
# Both sides drain a queue whose messages all become visible DELAY seconds after the fill started,
# so the app can be running with its clients connected before the first message shows up.
DELAY = 8


def delayed_queue(endpoint) -> tuple[str, str]:
    name = endpoint.queue_name("drain")
    url = endpoint.client.create_queue(QueueName=name, Attributes={"DelaySeconds": str(DELAY)})["QueueUrl"]
    return name, url


def fill(endpoint, queue_url: str, count: int) -> float:
    """Prefill; returns the moment (perf_counter) the first messages become visible."""
    visible_at = time.perf_counter() + DELAY
    prefill(endpoint, queue_url, count)
    assert time.perf_counter() < visible_at - 1, "prefill slower than DELAY: raise DELAY"
    return visible_at


def baseline_drain(endpoint, count: int) -> float:
    client = endpoint.client
    _, queue_url = delayed_queue(endpoint)
    started = fill(endpoint, queue_url, count)
    done = 0
    while done < count:
        messages = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          MessageAttributeNames=["All"]).get("Messages", [])
        if messages:
            client.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
            done += len(messages)
    return count / (time.perf_counter() - started)


def app_drain(endpoint, count: int, async_mode: str, pollers: int) -> float:
    queue_name, queue_url = delayed_queue(endpoint)
    app = AppProcess(endpoint_env(endpoint, queue_name, APP_MODE="consumer", ASYNC_MODE=async_mode,
                                  WAIT_TIME_SECONDS="1", HISTORY_SIZE="0", POLLERS=str(pollers),
                                  LOG_LEVEL="WARNING"))
    try:
        app.wait_healthy()
        clients = [LeanClient(app.base_url) for _ in range(CLIENTS)]
        started = fill(endpoint, queue_url, count)
        wait_until(lambda: all(len(c.ids) >= count for c in clients), 600,
                   f"{count} messages at {CLIENTS} clients", interval=0.02)
        elapsed = time.perf_counter() - started
        for c in clients:
            assert len(set(c.ids)) == count
            c.close()
        return count / elapsed
    finally:
        app.stop()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    async_mode = sys.argv[2] if len(sys.argv) > 2 else "threading"
    with localstack() as endpoint:
        rows = []
        for pollers in (1, 4):
            baseline = baseline_drain(endpoint, count)
            app = app_drain(endpoint, count, async_mode, pollers)
            rows.append((f"drain {count}, POLLERS={pollers} (msg/s)", app, baseline, "", ">= 1.0 (1.5)"))
        report(f"Consumer drain on LocalStack, {CLIENTS} Socket.IO clients, {async_mode}", rows)


if __name__ == "__main__":
    sys.exit(main())
