"""Faults on purpose, on real LocalStack: a consumer killed mid-stream loses nothing."""

import signal
import time

import pytest

from bench.common import LeanClient, prefill
from tests.servers import endpoint_env, wait_until

pytestmark = pytest.mark.slow


def test_kill_9_mid_drain_loses_nothing_and_marks_redeliveries(localstack_endpoint, start_app):
    """5,000 messages; the consumer is killed with SIGKILL half-way and started again. Every message
    reaches a Socket.IO client at least once, and a message seen twice is marked as redelivered."""
    sqs = localstack_endpoint
    name = sqs.queue_name("crash")
    env = endpoint_env(sqs, name, APP_MODE="consumer", VISIBILITY_TIMEOUT=5, WAIT_TIME_SECONDS=1,
                       CONSUMER_NAME="first")
    first = start_app(**env)
    first.wait_ready()
    url = sqs.client.get_queue_url(QueueName=name)["QueueUrl"]
    total = 5000
    seen: list[dict] = []
    client = LeanClient(first.base_url, sink=seen)
    sent_ids = set(prefill(sqs, url, total))
    assert len(sent_ids) == total
    wait_until(lambda: len(seen) >= total // 2, 120, "half the messages")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    client.close()
    # Received by the killed consumer and not deleted: the only messages that may come twice.
    in_flight_at_kill = sqs.in_flight(url)
    # A consumer delivers only to browsers connected at that moment. So that the restarted consumer
    # has a client before it sees the rest, park the backlog (like another consumer that died holding
    # it): it becomes visible again after PARK seconds, as the messages in flight at the kill do.
    parked = _park_everything(sqs, url, seconds=PARK)

    second = start_app(**{**env, "CONSUMER_NAME": "second"})
    client = LeanClient(second.base_url, sink=seen)
    assert parked + len({e["id"] for e in seen}) >= total - 200
    wait_until(lambda: {e["id"] for e in seen} >= sent_ids, 180,
               f"every message at a client (have {len({e['id'] for e in seen})} of {total})")
    client.close()

    counts: dict[str, int] = {}
    for event in seen:
        counts[event["id"]] = counts.get(event["id"], 0) + 1
    duplicates = {i for i, n in counts.items() if n > 1}
    # In flight at most: the batch being handled, two queued for their browsers' confirmation and the
    # one being confirmed (POLLERS=1, 10 messages each).
    assert len(duplicates) <= in_flight_at_kill <= 40, "only what was in flight at the kill may come twice"
    by_first = {e["id"] for e in seen if e["consumer"] == "first"}
    assert duplicates <= by_first and all(counts[i] == 2 for i in duplicates)
    for event in seen:
        if event["id"] in duplicates and event["consumer"] == "second":
            assert event["receive_count"] > 1, "a second delivery is marked as redelivered"
    wait_until(lambda: sqs.depth(url) == 0, 30, "the queue to be empty")


PARK = 15


def _park_everything(sqs, url, seconds):
    parked = 0
    while True:
        batch = sqs.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                           VisibilityTimeout=seconds).get("Messages", [])
        if not batch:
            return parked
        parked += len(batch)


def test_killed_after_emitting_but_before_the_browser_confirmed_the_message_is_redelivered(localstack_endpoint,
                                                                                           start_app, listen):
    """The window a plain emit leaves open: the frame is sent, the process dies before the browser has
    it. The batch is deleted only once the browser confirmed it, so a kill in between deletes nothing
    and the message comes back, marked as redelivered."""
    sqs = localstack_endpoint
    name = sqs.queue_name("unconfirmed")
    env = endpoint_env(sqs, name, APP_MODE="consumer", VISIBILITY_TIMEOUT=3, WAIT_TIME_SECONDS=1)
    first = start_app(**env, CONSUMER_NAME="first").wait_ready()
    url = sqs.client.get_queue_url(QueueName=name)["QueueUrl"]
    silent: list[dict] = []
    tab = LeanClient(first.base_url, sink=silent, confirm=False)   # gets the frame, never confirms
    [message_id] = prefill(sqs, url, 1)
    wait_until(lambda: silent, 10, "the message at the tab")
    time.sleep(1)
    assert sqs.in_flight(url) == 1, "not deleted while its browser has not confirmed it"
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    tab.close()

    second = start_app(**env, CONSUMER_NAME="second")
    client = listen(second.base_url)
    [again] = client.wait_messages(1, timeout=20)
    assert (again["id"], again["receive_count"], again["consumer"]) == (message_id, 2, "second")
    wait_until(lambda: sqs.depth(url) == 0, 10, "deleted once confirmed")


def test_a_tab_that_never_confirms_is_waited_for_once_then_not_again(localstack_endpoint, start_app, listen):
    """A hung or frozen tab costs the consumer one confirmation timeout, not one per batch: after it, the
    consumer deletes on the other browsers' confirmations alone, and they still get everything."""
    from app import CONFIRM_TIMEOUT

    sqs = localstack_endpoint
    name = sqs.queue_name("hung-tab")
    app = start_app(**endpoint_env(sqs, name, APP_MODE="consumer", WAIT_TIME_SECONDS=1)).wait_ready()
    url = sqs.client.get_queue_url(QueueName=name)["QueueUrl"]
    hung = LeanClient(app.base_url, confirm=False)
    client = listen(app.base_url)
    try:
        prefill(sqs, url, 1)
        client.wait_messages(1)
        time.sleep(CONFIRM_TIMEOUT / 2)
        assert sqs.in_flight(url) == 1, "waiting for the hung tab"
        wait_until(lambda: sqs.depth(url) == 0, CONFIRM_TIMEOUT + 5, "deleted after the timeout")
        started = time.monotonic()
        ids = prefill(sqs, url, 50)
        wait_until(lambda: sqs.depth(url) == 0, 30, "the rest deleted")
        assert time.monotonic() - started < CONFIRM_TIMEOUT, "the hung tab is not waited for again"
        assert app.get("/status").json()["browsers"]["lagging"] == 1
        wait_until(lambda: set(ids) <= {m["id"] for m in client.messages()}, 10, "all at the confirming client")
        wait_until(lambda: set(ids) <= set(hung.ids), 10, "every batch at the hung tab too")
    finally:
        hung.close()


def test_a_hung_tab_costs_one_timeout_even_with_many_batches_in_flight(localstack_endpoint, start_app, listen):
    """With four pollers, several batches are sent and awaiting confirmation when the hung tab misses
    its first deadline: all of them stop waiting for it then, not one timeout after another."""
    from app import CONFIRM_TIMEOUT

    sqs = localstack_endpoint
    name = sqs.queue_name("hung-many")
    app = start_app(**endpoint_env(sqs, name, APP_MODE="consumer", WAIT_TIME_SECONDS=1, POLLERS=4)).wait_ready()
    url = sqs.client.get_queue_url(QueueName=name)["QueueUrl"]
    hung = LeanClient(app.base_url, confirm=False)
    client = listen(app.base_url)
    try:
        ids = prefill(sqs, url, 400)
        started = time.monotonic()
        wait_until(lambda: sqs.depth(url) == 0, 60, "all deleted")
        elapsed = time.monotonic() - started
        assert elapsed < CONFIRM_TIMEOUT * 1.8, f"{elapsed:.1f}s: the hung tab was waited for more than once"
        wait_until(lambda: set(ids) <= {m["id"] for m in client.messages()}, 10, "all at the confirming client")
        assert set(ids) <= set(hung.ids), "the hung tab still got every batch"
    finally:
        hung.close()


def test_a_tab_joining_mid_burst_misses_nothing(localstack_endpoint, start_app, listen):
    """Tabs that connect while a backlog drains: each gets, in its history or live, every message from
    some point on, with no gap (a batch sent while it joined is in one or the other)."""
    sqs = localstack_endpoint
    name = sqs.queue_name("joiners")
    app = start_app(**endpoint_env(sqs, name, APP_MODE="consumer", WAIT_TIME_SECONDS=1, HISTORY_SIZE=20)).wait_ready()
    url = sqs.client.get_queue_url(QueueName=name)["QueueUrl"]
    reference = LeanClient(app.base_url)
    joiners = []
    try:
        ids = prefill(sqs, url, 3000)
        while sqs.depth(url) > 300 and len(joiners) < 30:
            joiners.append(listen(app.base_url))
            time.sleep(0.05)
        wait_until(lambda: set(ids) <= set(reference.ids), 60, "all at the reference client")
        order = reference.ids   # POLLERS=1: every client gets the batches in this order
        for joiner in joiners:
            wait_until(lambda: order[-1] in {m["id"] for m in joiner.messages()}, 10, "the last batch")
            history = [m["id"] for batch in joiner.of("sqs_history") for m in batch["messages"]]
            seen = set(history) | {m["id"] for m in joiner.messages()}
            first = min(order.index(i) for i in seen)
            missing = [i for i in order[first:] if i not in seen]
            assert not missing, f"{len(missing)} messages neither in the history nor live"
        assert len(joiners) >= 5
    finally:
        reference.close()


OUTAGE_SECONDS = 30


def test_sqs_outage_is_reported_and_recovered_without_losing_acknowledged_messages(localstack_endpoint, start_app,
                                                                                  listen, browser):
    """The path to SQS is cut for 30 s mid-stream and restored: both sides report it (readiness 503,
    the SQS state on both pages in Chromium, the consumer's error in its status event, 503 JSON from
    /produce) and recover without a restart; every message the producer acknowledged reaches the
    consumer's client."""
    import threading

    from tests.servers import TcpProxy

    proxy = TcpProxy(localstack_endpoint.url)
    try:
        name = localstack_endpoint.queue_name("outage")
        env = {**endpoint_env(localstack_endpoint, name), "AWS_ENDPOINT_URL": proxy.url, "WAIT_TIME_SECONDS": "2"}
        consumer = start_app(**{**env, "APP_MODE": "consumer"}).wait_ready()
        producer = start_app(**{**env, "APP_MODE": "producer"}).wait_ready()
        client = listen(consumer.base_url)
        pages = [browser.new_page() for _ in (consumer, producer)]
        for page, app in zip(pages, (consumer, producer)):
            page.goto(app.base_url)
            wait_until(lambda: page.text_content("#sqs-state").startswith("ready"), 15, "SQS ready on the page")
        acknowledged, refused = [], []
        stop = threading.Event()

        def stream():
            while not stop.is_set():
                try:
                    response = producer.post("/produce", json={"message": "tick"}, timeout=30)
                except Exception:  # noqa: BLE001
                    continue
                if response.status_code == 200:
                    acknowledged.extend(response.json()["message_ids"])
                else:
                    assert response.status_code == 503 and response.json()["endpoint"] == proxy.url
                    refused.append(response.json())
                time.sleep(0.1)

        sender = threading.Thread(target=stream, daemon=True)
        sender.start()
        time.sleep(3)
        proxy.cut()
        cut_at = time.monotonic()
        wait_until(lambda: consumer.get("/readyz").status_code == 503, 15, "consumer readiness 503")
        wait_until(lambda: producer.get("/readyz").status_code == 503, 15, "producer readiness 503")
        wait_until(lambda: refused, 20, "a 503 from /produce")
        wait_until(lambda: any((s.get("stats") or {}).get("last_error") for s in client.of("consumer_status")),
                   20, "the consumer's error on its status event")
        assert consumer.get("/healthz").status_code == 200   # alive, only SQS is gone
        for page in pages:   # the pages ask /readyz every 5 s
            wait_until(lambda: page.text_content("#sqs-state").startswith("not reachable"), 15, "the outage shown")
        time.sleep(max(0.0, cut_at + OUTAGE_SECONDS - time.monotonic()))
        proxy.restore()
        wait_until(lambda: consumer.get("/readyz").status_code == 200, 20, "consumer ready again")
        wait_until(lambda: producer.get("/readyz").status_code == 200, 20, "producer ready again")
        for page in pages:
            wait_until(lambda: page.text_content("#sqs-state").startswith("ready"), 15, "recovery shown")
        time.sleep(3)
        stop.set()
        sender.join(40)
        assert acknowledged and refused
        wait_until(lambda: set(acknowledged) <= {e["id"] for e in client.messages()}, 60,
                   "every acknowledged message at the client")
    finally:
        proxy.close()


SHUTDOWN_GRACE = 40   # Compose's stop_grace_period, the shorter of the two (Kubernetes gives 60 s)


@pytest.mark.parametrize("command, async_mode", [("app.py", "threading"), ("app.py", "eventlet"),
                                                 ("gunicorn", "threading")])
def test_sigterm_mid_stream_exits_0_and_every_message_is_delivered_or_handed_back(localstack_endpoint, start_app,
                                                                                  listen, command, async_mode):
    """SIGTERM while four long polls drain a backlog: exit 0 within the grace period, and each message
    either reached the browser and was deleted, or is back on the queue at once (not held until its
    60 s visibility timeout runs out); none is both, none is neither."""
    from tests.servers import GUNICORN

    sqs = localstack_endpoint
    name = sqs.queue_name("sigterm")
    run = {"command": GUNICORN} if command == "gunicorn" else {}
    app = start_app(**run, **endpoint_env(sqs, name, APP_MODE="consumer", ASYNC_MODE=async_mode, POLLERS=4,
                                          WAIT_TIME_SECONDS=5, VISIBILITY_TIMEOUT=60)).wait_ready()
    url = sqs.client.get_queue_url(QueueName=name)["QueueUrl"]
    client = listen(app.base_url)
    sent = set(prefill(sqs, url, 3000))
    wait_until(lambda: len(client.messages()) >= 500, 60, "the drain under way")
    started = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(SHUTDOWN_GRACE) == 0, app.logs()
    assert time.monotonic() - started < SHUTDOWN_GRACE
    delivered = [m["id"] for m in client.messages()]
    assert len(delivered) == len(set(delivered)), "nothing delivered twice"
    assert len(delivered) < len(sent), "stopped mid-stream"
    handed_back = {m["MessageId"] for m in sqs.drain(url, wait=1)}   # within seconds, not 60
    assert not set(delivered) & handed_back, "a message that reached the browser was deleted"
    assert set(delivered) | handed_back == sent, "every message delivered or back on the queue"
    assert "Traceback" not in app.logs()


PRODUCERS, REQUESTS_EACH = 50, 200
CLIENTS = 20


@pytest.mark.parametrize("command", ["app.py", "gunicorn"])
def test_load_50_producers_20_clients_no_5xx_and_every_message_at_every_client(localstack_endpoint, start_app,
                                                                               command):
    """50 producers send 200 requests each to the producer while 20 python-socketio clients watch the
    consumer (separate processes, as in Compose and Kubernetes; `python app.py` and the image's
    Gunicorn). Every answer is 200, and every client gets every acknowledged message exactly once."""
    import concurrent.futures
    import json
    import subprocess
    import sys

    import requests

    from tests.servers import GUNICORN, ROOT

    sqs = localstack_endpoint
    name = sqs.queue_name("load")
    env = endpoint_env(sqs, name, WAIT_TIME_SECONDS=1, LOG_LEVEL="WARNING")
    run = {"command": GUNICORN} if command == "gunicorn" else {}
    consumer = start_app(**run, **env, APP_MODE="consumer").wait_ready()
    producer = start_app(**run, **env, APP_MODE="producer").wait_ready()
    swarm = subprocess.Popen([sys.executable, "-m", "tests.swarm", consumer.base_url, str(CLIENTS)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert swarm.stdout.readline().strip() == "connected"

        def ask(command):
            swarm.stdin.write(command + "\n")
            swarm.stdin.flush()
            return json.loads(swarm.stdout.readline())

        def send(index: int) -> tuple[list[int], list[str]]:
            statuses, ids = [], []
            with requests.Session() as session:
                for n in range(REQUESTS_EACH):
                    response = session.post(producer.base_url + "/produce", timeout=60,
                                            json={"message": f"producer {index} request {n}"})
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        ids += response.json()["message_ids"]
            return statuses, ids

        with concurrent.futures.ThreadPoolExecutor(PRODUCERS) as pool:
            results = list(pool.map(send, range(PRODUCERS)))
        statuses = [s for r in results for s in r[0]]
        sent = sorted(i for r in results for i in r[1])
        assert {s: statuses.count(s) for s in set(statuses)} == {200: PRODUCERS * REQUESTS_EACH}
        assert len(set(sent)) == PRODUCERS * REQUESTS_EACH

        def all_there():
            state = ask("counts")
            assert all(state["connected"]), f"a client was dropped: {state}"
            return min(state["counts"]) >= len(sent)

        wait_until(all_there, 180, "every message at every client")
        for index, ids in enumerate(ask("ids")):
            assert sorted(ids) == sent, f"client {index}: missing, extra or repeated messages"
    finally:
        swarm.kill()
        swarm.wait()
    stats = consumer.get("/status").json()["stats"]
    assert stats["deleted"] == len(sent) and stats["failed"] == 0
    wait_until(lambda: sqs.depth(sqs.client.get_queue_url(QueueName=name)["QueueUrl"]) == 0, 30, "an empty queue")
