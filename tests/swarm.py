"""Many python-socketio clients in a process of their own, as browser tabs are: the load test's
readers do not share an interpreter (and its lock) with the test's fifty producer threads.

    python -m tests.swarm URL CLIENTS

Prints `connected` once all are connected, then answers each line on stdin:
`counts` -> one JSON line: how many messages each client has had, and whether each is still connected;
`ids`    -> one JSON line, each client's message ids in arrival order; then it disconnects and exits.
"""

from __future__ import annotations

import json
import sys

import socketio


class Client:
    def __init__(self, url: str):
        self.ids: list[str] = []
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("sqs_messages", lambda batch: self.ids.extend(m["id"] for m in batch["messages"]))
        self.sio.connect(url, transports=["websocket"], wait_timeout=10)


def main() -> int:
    url, count = sys.argv[1], int(sys.argv[2])
    clients = [Client(url) for _ in range(count)]
    print("connected", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "counts":
            print(json.dumps({"counts": [len(c.ids) for c in clients],
                              "connected": [c.sio.connected for c in clients]}), flush=True)
        elif command == "ids":
            print(json.dumps([list(c.ids) for c in clients]), flush=True)
            break
    for client in clients:
        client.sio.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
