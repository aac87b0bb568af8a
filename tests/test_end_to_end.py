"""The app as users run it (`python app.py` as a process), with real SQS servers and real Socket.IO
clients: a message goes from POST /produce through the queue to a browser-side event."""

import base64
import json
import subprocess
import signal
import sys
import time

import pytest
import requests

from tests.conftest import ROOT, TEST_ENV, endpoint_env, free_port, start_moto_server, stop_process, wait_until

ASYNC_MODES = ["threading", "eventlet"]


@pytest.mark.parametrize("async_mode", ASYNC_MODES)
def test_message_travels_from_produce_to_socketio_client(sqs, start_app, listen, async_mode):
    name = sqs.queue_name()
    app = start_app(**endpoint_env(sqs, name, ASYNC_MODE=async_mode, CONSUMER_NAME="consumer-under-test"))
    listener = listen(app.base_url)
    response = app.post("/produce", json={
        "message": json.dumps({"order": 42}),
        "attributes": {"user": "me", "priority": 7, "raw": {"DataType": "Binary", "BinaryValue": "AAEC"}}})
    assert response.status_code == 200, response.text
    [message_id] = response.json()["message_ids"]

    [event] = listener.wait_messages(1)
    assert event["id"] == message_id
    assert event["body"] == '{"order": 42}' and event["is_json"] is True
    assert event["attributes"] == {"user": {"type": "String", "value": "me"},
                                   "priority": {"type": "Number", "value": "7"},
                                   "raw": {"type": "Binary", "value": base64.b64encode(b"\x00\x01\x02").decode()}}
    assert event["receive_count"] == 1 and event["consumer"] == "consumer-under-test"
    assert event["sent_at"] <= event["received_at"] and abs(event["received_at"] / 1000 - time.time()) < 30
    assert "receipt" not in json.dumps(event).lower()
    queue_url = sqs.client.get_queue_url(QueueName=name)["QueueUrl"]
    wait_until(lambda: sqs.depth(queue_url) == 0, 10, "the message to be deleted")
    status = app.get("/status").json()
    assert status["stats"]["received"] == 1 and status["stats"]["deleted"] == 1
    assert status["async_mode"] == async_mode
    assert app.stop() == 0


def test_separate_producer_and_consumer_processes(localstack_endpoint, start_app, listen):
    """The Compose and Kubernetes topology: two processes, one queue."""
    name = localstack_endpoint.queue_name()
    consumer = start_app(**endpoint_env(localstack_endpoint, name, APP_MODE="consumer", CONSUMER_NAME="c1"))
    producer = start_app(**endpoint_env(localstack_endpoint, name, APP_MODE="producer"))
    listener = listen(consumer.base_url)
    ids = producer.post("/produce", json={"message": "across processes", "count": 30}).json()["message_ids"]
    events = listener.wait_messages(30)
    assert sorted(e["id"] for e in events) == sorted(ids)
    assert {e["consumer"] for e in events} == {"c1"}
    assert consumer.post("/produce", json={"message": "x"}).status_code == 404
    assert "produce-form" not in consumer.get("/").text and "produce-form" in producer.get("/").text


@pytest.mark.parametrize("async_mode", ASYNC_MODES)
def test_embedded_default_needs_no_configuration(start_app, listen, async_mode):
    app = start_app(ASYNC_MODE=async_mode, WAIT_TIME_SECONDS=20)   # the default long poll
    status = app.get("/status").json()
    assert status["queue"]["backend"] == "embedded"
    assert status["queue"]["endpoint"].startswith("http://127.0.0.1:")
    listener = listen(app.base_url)
    ids = app.post("/produce", json={"message": "hello from a fresh machine", "count": 3}).json()["message_ids"]
    assert [e["id"] for e in listener.wait_messages(3)] and len(ids) == 3
    assert "backend=embedded" in app.logs() and "queue resolved: http://127.0.0.1:" in app.logs()
    # Ctrl-C: the embedded queue ends with the process, so there is no long poll to wait out.
    time.sleep(1)   # the consumer is inside a 20 s long poll
    started = time.monotonic()
    app.proc.send_signal(signal.SIGINT)
    assert app.proc.wait(20) == 0
    assert time.monotonic() - started < 5
    assert "stopped cleanly" in app.logs() and "WARNING" not in app.logs()


def test_late_browsers_get_recent_history(moto_endpoint, start_app, listen):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), HISTORY_SIZE=5))
    first = listen(app.base_url)
    app.post("/produce", json={"message": "early", "count": 8})
    first.wait_messages(8)
    late = listen(app.base_url)
    history = wait_until(lambda: late.of("sqs_history"), 5, "history")[0]["messages"]
    assert len(history) == 5 and all(m["body"] == "early" for m in history)


def test_poison_message_is_retried_then_dead_lettered(localstack_endpoint, start_app, listen):
    name = localstack_endpoint.queue_name()
    app = start_app(**endpoint_env(localstack_endpoint, name, MAX_RECEIVE_COUNT=2, WAIT_TIME_SECONDS=1))
    listener = listen(app.base_url)
    app.post("/produce", json={"message": "poison", "attributes": {"simulate_failure": "yes"}})
    failures = wait_until(lambda: len(listener.of("sqs_message_failed")) >= 2 and listener.of("sqs_message_failed"),
                          30, "two failed attempts")
    assert [f["receive_count"] for f in failures[:2]] == [1, 2]
    dlq = localstack_endpoint.client.get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"]
    wait_until(lambda: localstack_endpoint.depth(dlq) == 1, 20, "the message in the dead-letter queue")
    assert listener.messages() == []
    assert app.get("/status").json()["stats"]["failed"] == 2


def test_fifo_queue_keeps_order(sqs, start_app, listen):
    name = sqs.queue_name(fifo=True)
    app = start_app(**endpoint_env(sqs, name))
    listener = listen(app.base_url)
    ids = []
    for i in range(3):
        response = app.post("/produce", json={"message": f"batch {i}", "count": 10})
        assert response.status_code == 200, response.text
        ids += response.json()["message_ids"]
    events = listener.wait_messages(30)
    assert [e["id"] for e in events] == ids
    assert {e["group_id"] for e in events} == {"default"}
    # FIFO fields are accepted here, and refused on standard queues (see test_produce_api).
    assert app.post("/produce", json={"message": "m", "group_id": "g1", "dedup_id": "d1"}).status_code == 200


@pytest.mark.parametrize("async_mode", ASYNC_MODES)
def test_health_answers_fast_during_a_long_poll(moto_endpoint, start_app, async_mode):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), WAIT_TIME_SECONDS=20,
                                   ASYNC_MODE=async_mode)).wait_ready()
    time.sleep(1)  # the consumer is now inside a 20 s long poll
    for path in ("/healthz", "/readyz", "/status"):
        started = time.monotonic()
        response = app.get(path)
        elapsed = time.monotonic() - started
        assert response.status_code == 200 and elapsed < 0.5, (path, elapsed)
    app.proc.kill()   # a clean stop would wait out the 20 s poll (tested elsewhere)


@pytest.mark.parametrize("async_mode", ASYNC_MODES)
def test_sigterm_stops_cleanly_with_exit_0(moto_endpoint, start_app, async_mode):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), ASYNC_MODE=async_mode))
    app.post("/produce", json={"message": "m", "count": 5})
    started = time.monotonic()
    assert app.stop() == 0
    assert time.monotonic() - started < 10
    assert "SIGTERM received" in app.logs() and "Traceback" not in app.logs()


def test_sqs_down_is_reported_and_recovered_without_restart(start_app, listen):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = start_app(**{**TEST_ENV, "AWS_ENDPOINT_URL": url, "QUEUE_NAME": "outage"})
    response = app.post("/produce", json={"message": "while down"})
    assert response.status_code == 503
    body = response.json()
    assert body["endpoint"] == url and body["region"] == "us-east-1" and body["queue_name"] == "outage"
    assert "unreachable" in body["error"] and body["sent"] == 0
    ready = app.get("/readyz")
    assert ready.status_code == 503 and ready.json()["reason"]
    assert app.get("/healthz").status_code == 200  # the loop is alive, only SQS is not
    listener = listen(app.base_url)
    wait_until(lambda: any(s["stats"]["last_error"] for s in listener.of("consumer_status")), 10, "error shown")

    server = start_moto_server(port)
    try:
        wait_until(lambda: app.get("/readyz").status_code == 200, 20, "readiness after recovery")
        ids = app.post("/produce", json={"message": "after recovery"}).json()["message_ids"]
        assert [e["id"] for e in listener.wait_messages(1, timeout=40)] == ids
    finally:
        stop_process(server)


@pytest.mark.parametrize("env, variable", [
    ({"APP_MODE": "both"}, "APP_MODE"),
    ({"PORT": "abc"}, "PORT"),
    ({"WAIT_TIME_SECONDS": "30"}, "WAIT_TIME_SECONDS"),
    ({"ASYNC_MODE": "gevent"}, "ASYNC_MODE"),
    ({"AWS_ENDPOINT_URL": "http://[::1"}, "AWS_ENDPOINT_URL"),
    ({"AWS_ENDPOINT_URL": "http://local host:4566"}, "AWS_ENDPOINT_URL"),
    ({"QUEUE_NAME": "q" * 78}, "QUEUE_NAME"),
    ({"CORS_ALLOWED_ORIGINS": "*"}, "CORS_ALLOWED_ORIGINS"),
])
def test_bad_configuration_stops_at_start_with_one_line(env, variable):
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr


def test_gunicorn_with_eventlet_on_the_embedded_endpoint_stops_at_start_with_one_line():
    """Gunicorn's eventlet worker never lets the embedded (threaded) endpoint start: refused, not hung."""
    from tests.servers import GUNICORN

    result = subprocess.run(GUNICORN, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "ASYNC_MODE": "eventlet"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if "configuration error" in line]
    assert len(lines) == 1 and "ASYNC_MODE" in lines[0] and "AWS_ENDPOINT_URL" in lines[0], result.stderr


def test_gunicorn_on_the_embedded_endpoint_stops_in_seconds(start_app):
    from tests.servers import GUNICORN

    app = start_app(command=GUNICORN, WAIT_TIME_SECONDS=20).wait_ready()
    time.sleep(1)   # inside a 20 s long poll
    started = time.monotonic()
    assert app.stop() == 0
    assert time.monotonic() - started < 8


def test_ready_when_the_dead_letter_queue_cannot_be_read(moto_endpoint, start_app):
    """The app works without reading its dead-letter queue (deleted, or no IAM rights on it): it stays
    ready and says what is wrong with the dead-letter queue instead."""
    url = moto_endpoint.create_queue(max_receive_count=3)
    name = url.rsplit("/", 1)[1]
    moto_endpoint.client.delete_queue(QueueUrl=moto_endpoint.client.get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"])
    app = start_app(**endpoint_env(moto_endpoint, name, APP_MODE="producer"))
    ready = wait_until(lambda: app.get("/readyz"), 10, "an answer")
    assert ready.status_code == 200, ready.text
    assert ready.json()["dead_letter_queue"] == f"{name}-dlq" and "NonExistentQueue" in ready.json()["dead_letter_error"]


def test_socket_io_client_is_served_by_the_app(moto_endpoint, start_app):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="consumer"))
    response = app.get("/vendor/socket.io.min.js")
    assert response.status_code == 200 and "Socket.IO" in response.text[:300]
    assert requests.get(app.base_url + "/", timeout=5).text.count("/vendor/socket.io.min.js") == 1


def test_a_chunked_body_over_the_cap_gets_413_naming_body(moto_endpoint, start_app):
    """No Content-Length: the app must bound the read itself and say so, not call it bad JSON."""
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="producer"))

    def chunks(count):
        yield b'{"message": "'
        for _ in range(count):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    too_big = app.post("/produce", data=chunks(9), headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413 and too_big.json()["field"] == "body"
    fits = app.post("/produce", data=chunks(1), headers={"Content-Type": "application/json"})
    assert fits.status_code == 200 and fits.json()["sent"] == 1   # exactly 1 MiB: the queue's limit


def test_a_body_with_nan_shows_as_text_and_does_not_break_later_pages(moto_endpoint, start_app, listen):
    """NaN/Infinity are not JSON: parsed naively they would make the event unreadable for browsers."""
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name()))
    first = listen(app.base_url)
    bodies = ['{"x": NaN}', '[-Infinity]', '{"x": 1e400}', '{"ok": [1, 2]}']
    for body in bodies:
        assert app.post("/produce", json={"message": body}).status_code == 200
    events = first.wait_messages(4)
    assert {e["body"]: e["is_json"] for e in events} == {bodies[0]: False, bodies[1]: False, bodies[2]: False,
                                                         bodies[3]: True}
    late = listen(app.base_url)   # its history holds all four
    history = wait_until(lambda: late.of("sqs_history"), 5, "history")[0]["messages"]
    assert [m["body"] for m in history] == [e["body"] for e in events]


def test_a_huge_body_reaches_browsers_shortened_and_flagged(moto_endpoint, start_app, listen):
    """Browsers get a body up to LIVE_BODY_CHARS, with its whole length: ten 1 MiB bodies to each of
    twenty tabs would be 200 MB of frames per batch (the page shows 2,000 characters)."""
    from app import LIVE_BODY_CHARS

    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name()))
    listener = listen(app.base_url)
    body = json.dumps(["x" * 1000] * 900)   # 902,701 characters of JSON
    assert app.post("/produce", json={"message": body, "count": 3}).status_code == 200
    events = listener.wait_messages(3)
    for event in events:
        assert event["body"] == body[:LIVE_BODY_CHARS] and event["body_truncated"] is True
        assert event["body_chars"] == len(body) and event["is_json"] is True
    small = app.post("/produce", json={"message": "short"}).json()["message_ids"]
    [event] = [e for e in listener.wait_messages(4) if e["id"] in small]
    assert event["body"] == "short" and "body_truncated" not in event


def test_a_hung_endpoint_gets_quick_answers(start_app):
    """An endpoint that accepts connections and never answers: readiness answers at once, /produce
    within seconds, both naming the problem; shutdown still ends cleanly."""
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    url = f"http://127.0.0.1:{hung.getsockname()[1]}"
    try:
        app = start_app(**{**TEST_ENV, "AWS_ENDPOINT_URL": url, "QUEUE_NAME": "hung"})
        for _ in range(3):
            started = time.monotonic()
            ready = app.get("/readyz")
            assert ready.status_code == 503 and time.monotonic() - started < 1.0
        started = time.monotonic()
        response = app.post("/produce", json={"message": "m"})
        assert response.status_code == 503 and response.json()["endpoint"] == url
        assert time.monotonic() - started < 20
        assert app.stop(timeout=60) == 0
    finally:
        hung.close()


def test_port_in_use_stops_at_start_with_one_line(moto_endpoint, start_app):
    taken = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="producer"))
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "PORT": str(taken.port)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PORT" in lines[0] and "in use" in lines[0], result.stderr


def test_sigterm_during_a_burst_lets_the_request_finish(moto_endpoint, start_app):
    import threading

    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="producer"))
    answers = []
    sender = threading.Thread(target=lambda: answers.append(
        app.post("/produce", json={"message": "burst", "count": 1000}, timeout=60)))
    sender.start()
    time.sleep(0.3)
    assert app.stop(timeout=60) == 0
    sender.join(60)
    assert answers and answers[0].status_code == 200 and answers[0].json()["sent"] == 1000


@pytest.mark.parametrize("command", ["app.py", "gunicorn"])
def test_sigterm_under_continuous_load_answers_every_accepted_request_and_exits_promptly(moto_endpoint, start_app,
                                                                                        command):
    """Eight clients post without pause; SIGTERM. New requests get a 503 naming the shutdown, the ones
    already accepted are answered, the process exits 0 in seconds, and the queue holds exactly what
    was answered 200: nothing sent without its client being told."""
    import threading

    from tests.servers import GUNICORN

    run = {"command": GUNICORN} if command == "gunicorn" else {}
    app = start_app(**run, **endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="producer"))
    url = app.wait_ready().get("/readyz").json()["queue_url"]
    sent, refusals, stop = [], [], threading.Event()

    def client():
        session = requests.Session()
        while not stop.is_set():
            try:
                response = session.post(app.base_url + "/produce", json={"message": "load", "count": 10}, timeout=30)
            except requests.ConnectionError:
                session = requests.Session()   # refused or closed before an answer: try again
                if app.proc.poll() is not None:
                    return
                continue
            if response.status_code == 200:
                sent.append(response.json()["sent"])
            else:
                refusals.append((response.status_code, response.json()))

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    wait_until(lambda: len(sent) >= 20, 20, "requests answered under load")
    started = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    code = app.proc.wait(30)
    elapsed = time.monotonic() - started
    stop.set()
    for thread in clients:
        thread.join(30)
    assert code == 0 and elapsed < 10, (code, elapsed)
    assert all(status == 503 and "shutting down" in body["error"] for status, body in refusals), refusals[:3]
    assert moto_endpoint.depth(url) == sum(sent), "the queue holds exactly what the clients were told was sent"


def test_sigterm_during_a_long_burst_answers_what_it_sent(moto_endpoint, start_app):
    """A burst of 1,000 bodies of 250 KB (four per SQS call) when SIGTERM comes: it finishes, or stops
    between two calls STOP_SENDING_AFTER seconds later and answers 503 with how many it sent. Either
    way the answer arrives, the process exits 0, and the queue holds exactly what the answer says."""
    import threading

    from app import STOP_SENDING_AFTER

    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="producer"))
    url = app.wait_ready().get("/readyz").json()["queue_url"]
    answers = []
    sender = threading.Thread(target=lambda: answers.append(
        app.post("/produce", json={"message": "b" * 250_000, "count": 1000}, timeout=90)))
    sender.start()
    wait_until(lambda: moto_endpoint.depth(url) > 0, 20, "the burst under way")
    started = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(60) == 0
    sender.join(10)
    assert time.monotonic() - started < STOP_SENDING_AFTER + 10
    [answer] = answers
    body = answer.json()
    assert answer.status_code == 200 or (answer.status_code == 503 and "shutting down" in body["error"]), body
    assert len(body["message_ids"]) == body["sent"] == moto_endpoint.depth(url)


def test_counters_reach_browsers_throttled_and_the_last_one_always(moto_endpoint, start_app, listen):
    """One consumer_status per batch would be half of every browser's frames under a backlog: they are
    sent at most every STATUS_INTERVAL, and the last one (all deleted) always arrives."""
    from app import STATUS_INTERVAL

    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="consumer", POLLERS=2)).wait_ready()
    listener = listen(app.base_url)
    wait_until(lambda: listener.of("consumer_status"), 5, "the status on connect")
    url = moto_endpoint.client.get_queue_url(QueueName=app.env["QUEUE_NAME"])["QueueUrl"]
    started = time.monotonic()
    for start in range(0, 300, 10):
        moto_endpoint.client.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)])
    try:
        wait_until(lambda: listener.of("consumer_status")[-1]["stats"]["deleted"] == 300, 30, "all deleted, on the page")
    except AssertionError as exc:   # say where it stopped
        raise AssertionError(f"{exc}; last status {listener.of('consumer_status')[-1]['stats']}; "
                             f"{len(listener.messages())} messages at the client; log:\n{app.logs()[-3000:]}") from None
    elapsed = time.monotonic() - started
    batches = len(listener.of("sqs_messages"))
    statuses = len(listener.of("consumer_status")) - 1
    assert statuses <= 2 + elapsed / STATUS_INTERVAL, (statuses, batches, elapsed)
    assert statuses < batches, (statuses, batches, elapsed)


@pytest.mark.parametrize("command", ["app.py", "gunicorn"])
def test_browsers_over_max_browsers_are_refused_and_probes_still_answer(moto_endpoint, start_app, command):
    """Under Gunicorn each open WebSocket holds a thread: without a cap, the 51st tab took the last
    one and /healthz hung. Tabs over MAX_BROWSERS get 503 naming it; probes answer at once."""
    import socketio

    from tests.servers import GUNICORN, Listener

    run = {"command": GUNICORN} if command == "gunicorn" else {}
    app = start_app(**run, **endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="consumer",
                                          MAX_BROWSERS=3))
    tabs = [Listener(app.base_url) for _ in range(3)]
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            Listener(app.base_url)
        refused = requests.get(app.base_url + "/socket.io/?EIO=4&transport=polling", timeout=5)
        assert refused.status_code == 503 and refused.json()["field"] == "MAX_BROWSERS"
        started = time.monotonic()
        assert app.get("/healthz").status_code == 200 and time.monotonic() - started < 1
        assert app.get("/status").json()["browsers"] == {"connected": 3, "max": 3, "lagging": 0}
        tabs.pop().close()
        tabs.append(wait_until(lambda: Listener(app.base_url), 10, "a place for a new tab"))
    finally:
        for tab in tabs:
            tab.close()


def test_handshakes_that_never_join_do_not_lock_real_tabs_out(moto_endpoint, start_app):
    """A script opening Engine.IO handshakes and never joining Socket.IO holds no thread: it must not
    take the places MAX_BROWSERS keeps for real tabs."""
    from tests.servers import Listener

    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="consumer", MAX_BROWSERS=2))
    for _ in range(10):
        handshake = requests.get(app.base_url + "/socket.io/?EIO=4&transport=polling", timeout=5)
        assert handshake.status_code == 200 and '"sid"' in handshake.text
    tabs = [Listener(app.base_url), Listener(app.base_url)]
    try:
        assert app.get("/status").json()["browsers"]["connected"] == 2
        refused = requests.get(app.base_url + "/socket.io/?EIO=4&transport=polling", timeout=5)
        assert refused.status_code == 503, "the cap still holds for tabs that did join"
    finally:
        for tab in tabs:
            tab.close()
