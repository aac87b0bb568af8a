"""What the benchmarks share: real LocalStack (as the tests start it), prefilling, and printing
each figure beside its baseline from the same run."""

from __future__ import annotations

import concurrent.futures
import platform
import sys
import time
from contextlib import contextmanager

from tests.servers import LocalStack, SqsEndpoint, localstack_python


@contextmanager
def localstack():
    python = localstack_python()
    if not python:
        sys.exit("LocalStack is not installed: run `make test` once (it installs .venv-localstack)")
    server = LocalStack(python)
    try:
        yield SqsEndpoint("localstack", server.url)
    finally:
        server.stop()


def prefill(endpoint: SqsEndpoint, queue_url: str, count: int, body: str = "bench", workers: int = 4) -> None:
    """Put `count` messages on the queue quickly (batches of 10 from a few threads)."""
    def send(start: int) -> None:
        n = min(10, count - start)
        endpoint.client.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "MessageBody": f"{body} {start + i}",
             "MessageAttributes": {"user": {"DataType": "String", "StringValue": "me"}}} for i in range(n)])

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, range(0, count, 10)))


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def report(title: str, rows: list[tuple[str, float, float, str, str]]) -> None:
    """rows: (figure, app value, baseline value, unit, target) with ratio = app / baseline."""
    print(f"\n{title}  ({machine()})")
    print(f"{'figure':38} {'app':>12} {'baseline':>12} {'ratio':>7}  target")
    for name, app, baseline, unit, target in rows:
        ratio = app / baseline if baseline else float("nan")
        print(f"{name:38} {app:>10.1f} {unit:<1} {baseline:>10.1f} {unit:<1} {ratio:>7.2f}  {target}")
