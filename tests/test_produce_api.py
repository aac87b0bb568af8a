"""POST /produce through the Flask app in process, against a real SQS server: every bad request gets
a 4xx JSON answer naming the field, and nothing reaches the queue."""

import json

import pytest

from app import create_app
from settings import Settings


@pytest.fixture
def api(sqs, monkeypatch):
    """A producer-only app on its own queue (moto and LocalStack), built from settings, not globals."""
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(key, value)
    name = sqs.queue_name()
    settings = Settings.from_env({"APP_MODE": "producer", "AWS_ENDPOINT_URL": sqs.url, "QUEUE_NAME": name})
    app = create_app(settings, start_consumer=False)
    app.extensions["sqs_app"].queue.info()  # the app creates its queue (and DLQ) on first use
    client = app.test_client()
    client.sqs, client.queue_name = sqs, name
    client.queue_url = lambda: sqs.client.get_queue_url(QueueName=name)["QueueUrl"]
    return client


BAD_JSON_REQUESTS = [
    ({"message": ""}, 400, "message"),
    ({"message": 5}, 400, "message"),
    ({"count": 2}, 400, "message"),
    ({"message": "m", "count": 0}, 400, "count"),
    ({"message": "m", "count": 5000}, 400, "count"),
    ({"message": "m", "attributes": {"AWS.x": "v"}}, 400, "attributes.AWS.x"),
    ({"message": "m", "attributes": {f"k{i}": "v" for i in range(11)}}, 400, "attributes"),
    ({"message": "m", "attributes": {"k": {"DataType": "Number", "StringValue": "x"}}}, 400, "attributes.k"),
    ({"message": "m", "group_id": "g"}, 400, "group_id"),
    ({"message": "m\x00"}, 400, "message"),
    ({"message": "x" * 1_048_577}, 413, "message"),
]


@pytest.mark.parametrize("payload, status, field", BAD_JSON_REQUESTS)
def test_bad_requests_are_refused_and_nothing_is_sent(api, payload, status, field):
    response = api.post("/produce", json=payload)
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["field"] == field and body["error"]
    assert api.sqs.depth(api.queue_url()) == 0


@pytest.mark.parametrize("data, content_type, status, field", [
    ("{not json", "application/json", 400, "body"),
    ('"just a string"', "application/json", 400, "body"),
    ("message=hi", "application/x-www-form-urlencoded", 415, "Content-Type"),
    ("message=hi", "text/plain", 415, "Content-Type"),
    (b"\xff\xfe{}", "application/json", 400, "body"),
])
def test_non_json_bodies_are_refused(api, data, content_type, status, field):
    response = api.post("/produce", data=data, content_type=content_type)
    assert response.status_code == status
    assert response.is_json and response.get_json()["field"] == field


def test_a_request_over_the_size_cap_gets_413_json(api):
    response = api.post("/produce", data="x" * (9 * 1024 * 1024), content_type="application/json")
    assert response.status_code == 413 and response.is_json and response.get_json()["field"] == "body"


def test_a_burst_is_sent_in_order_with_its_attributes(api):
    response = api.post("/produce", json={"message": '{"n": 1}', "count": 25,
                                          "attributes": {"user": "me", "b": {"DataType": "Binary",
                                                                             "BinaryValue": "AAE="}}})
    assert response.status_code == 200
    body = response.get_json()
    assert body["sent"] == 25 and len(set(body["message_ids"])) == 25
    received = api.sqs.drain(api.queue_url())
    assert sorted(m["MessageId"] for m in received) == sorted(body["message_ids"])
    assert all(m["Body"] == '{"n": 1}' for m in received)
    assert all(m["MessageAttributes"]["user"]["StringValue"] == "me" for m in received)
    assert all(m["MessageAttributes"]["b"]["BinaryValue"] == b"\x00\x01" for m in received)


def test_the_app_creates_the_queue_with_a_dead_letter_queue(api):
    api.post("/produce", json={"message": "m"})
    url = api.queue_url()
    attrs = api.sqs.client.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
    policy = json.loads(attrs["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(f":{api.queue_name}-dlq")
    assert int(policy["maxReceiveCount"]) == 5


def test_unknown_routes_and_methods_answer_json(api):
    assert api.get("/nope").status_code == 404 and api.get("/nope").is_json
    response = api.get("/produce")
    assert response.status_code == 405 and response.is_json


def test_status_page_and_headers(api):
    status = api.get("/status").get_json()
    assert status["mode"] == "producer" and status["queue"]["backend"] == "endpoint"
    page = api.get("/")
    assert page.status_code == 200 and b"produce-form" in page.data and b'id="messages"' not in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize("data, headers, status, field", [
    ("null", {}, 400, "body"),
    ("[1, 2]", {}, 400, "body"),
    ('{"message": "a", "message": "b"}', {}, 400, "message"),
    ('{"message": "a", "attributes": {"user": "me", "user": "you"}}', {}, 400, "user"),
    ('{"message": "a", "count": NaN}', {}, 400, "body"),
    ('{"message": "a", "count": Infinity}', {}, 400, "body"),
    ('{"message": "a", "count": 1e400}', {}, 400, "body"),
    ('{"message": "a", "count": ' + "9" * 5000 + "}", {}, 400, "body"),
    ('{"message": "x", "attributes": ' + "[" * 5000 + "]" * 5000 + "}", {}, 400, "body"),
    ('{"message": "caf\xe9"}'.encode("latin-1"), {"Content-Type": "application/json; charset=latin-1"}, 415,
     "Content-Type"),
    (b'{"message": "caf\xe9"}', {}, 400, "body"),
    ('{"message": "x"}', {"Content-Encoding": "gzip"}, 415, "Content-Encoding"),
])
def test_malformed_json_bodies_get_4xx_naming_the_problem(api, data, headers, status, field):
    headers = {"Content-Type": "application/json", **headers}
    response = api.post("/produce", data=data, headers=headers)
    assert response.status_code == status, response.get_json()
    assert response.is_json and response.get_json()["field"] == field and response.get_json()["error"]
    assert api.sqs.depth(api.queue_url()) == 0


def test_a_large_message_written_with_escapes_is_accepted(api):
    """1,000,000 UTF-8 bytes, but 3 MB as JSON with \\u escapes: under the queue limit, so it is sent."""
    body = json.dumps({"message": "\u00e9" * 500_000})
    assert len(body) > 2_900_000
    response = api.post("/produce", data=body, content_type="application/json")
    assert response.status_code == 200, response.get_json()


def test_options_on_produce_answers_json_405(api):
    response = api.open("/produce", method="OPTIONS")
    assert response.status_code == 405 and response.is_json
