"""Memory: the consumer's resident set size across N = 50,000 messages with 5 Socket.IO clients
connected. Target: growth under 10% between warm-up (the first 5,000) and the end.

    .venv/bin/python -m bench.memory [N] [ASYNC_MODE]
"""

from __future__ import annotations

import sys
import threading
import time

from bench.common import LeanClient, localstack, machine, prefill
from tests.servers import AppProcess, endpoint_env, wait_until

CLIENTS = 5
WARM_UP = 5000


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    async_mode = sys.argv[2] if len(sys.argv) > 2 else "threading"
    with localstack() as endpoint:
        name = endpoint.queue_name("mem")
        app = AppProcess(endpoint_env(endpoint, name, APP_MODE="consumer", ASYNC_MODE=async_mode, POLLERS="4",
                                      WAIT_TIME_SECONDS="1", LOG_LEVEL="WARNING"))
        try:
            app.wait_ready()
            url = endpoint.client.get_queue_url(QueueName=name)["QueueUrl"]
            clients = [LeanClient(app.base_url) for _ in range(CLIENTS)]

            def feed():   # keep a shallow backlog, as a steady producer would
                sent = 0
                while sent < count:
                    backlog = int(endpoint.client.get_queue_attributes(
                        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                        "ApproximateNumberOfMessages"])
                    if backlog > 2000:
                        time.sleep(0.2)
                        continue
                    batch = min(1000, count - sent)
                    prefill(endpoint, url, batch, body="x" * 200)
                    sent += batch

            feeder = threading.Thread(target=feed, daemon=True)
            started = time.perf_counter()
            feeder.start()
            wait_until(lambda: min(len(c.ids) for c in clients) >= WARM_UP, 600, "warm-up", interval=0.2)
            warm = rss_mib(app.proc.pid)
            samples = [warm]
            while min(len(c.ids) for c in clients) < count:
                time.sleep(2)
                samples.append(rss_mib(app.proc.pid))
            end = rss_mib(app.proc.pid)
            elapsed = time.perf_counter() - started
            for c in clients:
                assert len(set(c.ids)) == count
                c.close()
        finally:
            app.stop()
    print(f"\n5. Consumer memory across {count} messages, {CLIENTS} clients, {async_mode}  ({machine()})")
    print(f"   RSS after warm-up ({WARM_UP}): {warm:.1f} MiB; at the end: {end:.1f} MiB; peak {max(samples):.1f} MiB")
    print(f"   growth: {100 * (end - warm) / warm:+.1f}%  (target < 10%); {count / elapsed:.0f} msg/s overall")


if __name__ == "__main__":
    sys.exit(main())
