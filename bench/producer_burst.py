"""Producer burst: `POST /produce` with count 1,000, repeated, against a plain send_message_batch loop
on the same LocalStack in the same run. Target: app / baseline >= 0.9.

    .venv/bin/python -m bench.producer_burst [REPEATS] [ASYNC_MODE]
"""

from __future__ import annotations

import sys
import time

import requests

from bench.common import localstack, report
from tests.servers import AppProcess, endpoint_env

BURST = 1000


def baseline_burst(endpoint, queue_url: str, repeats: int) -> float:
    entries = [{"Id": str(i), "MessageBody": "burst",
                "MessageAttributes": {"user": {"DataType": "String", "StringValue": "me"}}} for i in range(10)]
    started = time.perf_counter()
    for _ in range(repeats * BURST // 10):
        response = endpoint.client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed")
    return repeats * BURST / (time.perf_counter() - started)


def app_burst(app: AppProcess, repeats: int) -> float:
    session = requests.Session()
    started = time.perf_counter()
    for _ in range(repeats):
        response = session.post(app.base_url + "/produce", timeout=60,
                                json={"message": "burst", "attributes": {"user": "me"}, "count": BURST})
        assert response.status_code == 200 and response.json()["sent"] == BURST, response.text
    return repeats * BURST / (time.perf_counter() - started)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    async_mode = sys.argv[2] if len(sys.argv) > 2 else "threading"
    with localstack() as endpoint:
        name = endpoint.queue_name("burst")
        app = AppProcess(endpoint_env(endpoint, name, APP_MODE="producer", ASYNC_MODE=async_mode,
                                      LOG_LEVEL="WARNING"))
        try:
            app.wait_ready()
            queue_url = endpoint.client.get_queue_url(QueueName=name)["QueueUrl"]
            rows = []
            for round_ in (1, 2):   # interleaved, so drift in LocalStack affects both sides alike
                baseline = baseline_burst(endpoint, queue_url, repeats)
                measured = app_burst(app, repeats)
                rows.append((f"{repeats} x POST count={BURST}, round {round_} (msg/s)", measured, baseline, "",
                             ">= 0.9"))
        finally:
            app.stop()
        report(f"Producer burst on LocalStack, {async_mode}", rows)


if __name__ == "__main__":
    sys.exit(main())
