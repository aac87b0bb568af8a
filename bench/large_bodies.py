"""Memory with large bodies: the app's peak resident set size while 50 messages of almost 1 MiB of
JSON go through it (POST /produce, the consumer, 5 Socket.IO clients). On the embedded-style moto
server, whose queues take 1 MiB messages (LocalStack's take 256 KiB). Target: under the consumer
pod's 256 MiB memory limit (k8s/consumer.yaml).

    .venv/bin/python -m bench.large_bodies [CLIENTS]
"""

from __future__ import annotations

import json
import sys

from bench.common import LeanClient, machine
from tests.servers import AppProcess, SqsEndpoint, endpoint_env, free_port, start_moto_server, stop_process, wait_until

MESSAGES = 50
LIMIT_MIB = 256


def memory_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def main() -> None:
    clients_wanted = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    port = free_port()
    moto = start_moto_server(port)
    endpoint = SqsEndpoint("moto", f"http://127.0.0.1:{port}")
    app = AppProcess(endpoint_env(endpoint, endpoint.queue_name("large"), LOG_LEVEL="WARNING"))
    try:
        app.wait_ready()
        clients = [LeanClient(app.base_url) for _ in range(clients_wanted)]
        items = 1000
        while len(json.dumps([{"n": i, "v": "abcdefgh"} for i in range(items + 1000)])) < 1_000_000:
            items += 1000
        body = json.dumps([{"n": i, "v": "abcdefgh"} for i in range(items)])
        before = memory_kib(app.proc.pid, "VmRSS")
        for _ in range(MESSAGES // 10):
            response = app.post("/produce", json={"message": body, "count": 10}, timeout=120)
            assert response.status_code == 200, response.text[:300]
        wait_until(lambda: all(len(c.ids) >= MESSAGES for c in clients), 300, "every message at every client")
        peak = memory_kib(app.proc.pid, "VmHWM") / 1024
        print(f"\nlarge bodies ({machine()}): {MESSAGES} x {len(body):,} characters of JSON, {clients_wanted} clients")
        print(f"RSS before {before / 1024:.0f} MiB, peak {peak:.0f} MiB, after "
              f"{memory_kib(app.proc.pid, 'VmRSS') / 1024:.0f} MiB; peak / pod limit "
              f"{peak / LIMIT_MIB:.2f} (target < 1.0)")
        for client in clients:
            client.close()
    finally:
        app.stop()
        stop_process(moto)


if __name__ == "__main__":
    main()
