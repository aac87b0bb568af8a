"""What the benchmarks share: real LocalStack (as the tests start it), prefilling, and printing
each figure beside its baseline from the same run."""

from __future__ import annotations

import concurrent.futures
import platform
import re
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


def prefill(endpoint: SqsEndpoint, queue_url: str, count: int, body: str = "bench", workers: int = 4) -> list[str]:
    """Put `count` messages on the queue quickly (batches of 10 from a few threads); their ids."""
    def send(start: int) -> list[str]:
        n = min(10, count - start)
        response = endpoint.client.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "MessageBody": f"{body} {start + i}",
             "MessageAttributes": {"user": {"DataType": "String", "StringValue": "me"}}} for i in range(n)])
        assert not response.get("Failed"), response["Failed"]
        return [ok["MessageId"] for ok in response["Successful"]]

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return [message_id for ids in pool.map(send, range(0, count, 10)) for message_id in ids]


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


class LeanClient:
    """A minimal Socket.IO client over one WebSocket (Engine.IO 4): connects to the default
    namespace, answers pings, records the messages of `sqs_messages` events by id in a thread of its
    own, and confirms each event (the consumer deletes a batch once its browsers confirmed it).

    The benchmarks use it because python-socketio's client spends about 0.6 ms per event; with five
    of them on a 2-core machine the figure would measure the clients instead of the app.
    """

    def __init__(self, base_url: str, sink: list | None = None, confirm: bool = True):
        import json
        import threading

        import websocket  # websocket-client, a dependency of python-socketio[client]

        self.ids: list[str] = []
        self.received_at: dict[str, float] = {}
        self.sink = sink   # if given, each whole message is appended to it too
        self.confirm = confirm   # False: a tab that receives but never confirms (hung, frozen)
        # Socket.IO EVENT frames: 42<ack id>["sqs_messages",{...}]; confirmed with 43<ack id>[].
        self._event = re.compile(r'42(\d*)\["sqs_messages",')
        self._json = json
        self.ws = websocket.create_connection(base_url.replace("http://", "ws://")
                                              + "/socket.io/?EIO=4&transport=websocket", timeout=10)
        assert self.ws.recv().startswith("0")          # Engine.IO open
        self.ws.send("40")                            # Socket.IO connect, default namespace
        while not self.ws.recv().startswith("40"):
            pass
        self.ws.settimeout(None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                frame = self.ws.recv()
                if frame == "2":
                    self.ws.send("3")
                elif event := self._event.match(frame):
                    now = time.perf_counter()
                    for message in self._json.loads(frame[2 + len(event.group(1)):])[1]["messages"]:
                        self.ids.append(message["id"])
                        if self.sink is not None:
                            self.sink.append(message)
                        self.received_at.setdefault(message["id"], now)
                    if event.group(1) and self.confirm:
                        self.ws.send(f"43{event.group(1)}[]")
        except Exception:  # noqa: BLE001 - the connection closed
            return

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass
