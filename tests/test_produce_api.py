"""POST /produce through the Flask app in process, against a real SQS server: every bad request gets
a 4xx JSON answer naming the field, and nothing reaches the queue."""

import json

import pytest

from tests.bad_requests import BAD_FIFO_PAYLOADS, BAD_PAYLOADS
from tests.conftest import producer_app


@pytest.fixture
def api(sqs, monkeypatch):
    """A producer-only app on its own queue (moto and LocalStack), built from settings, not globals."""
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(key, value)
    name = sqs.queue_name()
    client, url = producer_app(sqs, name)
    client.sqs, client.queue_name = sqs, name
    client.queue_url = lambda: url
    return client


@pytest.fixture(scope="module", params=["moto", "localstack"])
def producers(request):
    """A producer-only app on a standard queue and one on a FIFO queue, per SQS server."""
    sqs = request.getfixturevalue(f"{request.param}_endpoint")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "test")
        yield sqs, {"standard": producer_app(sqs, sqs.queue_name("api")),
                     "fifo": producer_app(sqs, sqs.queue_name("api", fifo=True))}


JSON = {"Content-Type": "application/json"}


def _request(queue: str, data, status: int, field: str, headers=None, id: str | None = None):
    """One row: what is posted (a payload, sent as JSON, or raw bytes/text), to which queue, and the
    status and field the answer must name."""
    return pytest.param(queue, data, {**JSON, **(headers or {})}, status, field, id=id)


MALFORMED_REQUESTS = [
    # Payloads: shape, message, count, attributes, and FIFO fields on a standard queue.
    *(_request("standard", payload, 400, field, id=f"payload-{i}") for i, (payload, field) in enumerate(BAD_PAYLOADS)),
    # FIFO fields a FIFO queue refuses.
    *(_request("fifo", payload, 400, field, id=f"fifo-{i}") for i, (payload, field) in enumerate(BAD_FIFO_PAYLOADS)),
    # Bodies that are not one standard JSON object.
    _request("standard", "", 400, "body", id="empty body"),
    _request("standard", "{not json", 400, "body", id="broken JSON"),
    _request("standard", '{"message": "m"} trailing', 400, "body", id="trailing garbage"),
    _request("standard", "{'message': 'm'}", 400, "body", id="single quotes"),
    _request("standard", '{"message": "m", }', 400, "body", id="trailing comma"),
    _request("standard", '{"message": "m" /* c */}', 400, "body", id="comment"),
    _request("standard", '"just a string"', 400, "body", id="a string"),
    _request("standard", "null", 400, "body", id="null"),
    _request("standard", "[1, 2]", 400, "body", id="an array"),
    _request("standard", "42", 400, "body", id="a number"),
    _request("standard", '{"message": "a", "message": "b"}', 400, "message", id="duplicate key"),
    _request("standard", '{"message": "a", "attributes": {"user": "me", "user": "you"}}', 400, "attributes.user",
             id="duplicate attribute"),
    _request("standard", '{"message": "a", "attributes": {"n": {"DataType": "Number", "DataType": "String"}}}', 400,
             "attributes.n.DataType", id="duplicate key inside an attribute"),
    _request("standard", '{"message": "a", "count": NaN}', 400, "body", id="NaN"),
    _request("standard", '{"message": "a", "count": Infinity}', 400, "body", id="Infinity"),
    _request("standard", '{"message": "a", "count": 1e400}', 400, "body", id="1e400"),
    _request("standard", '{"message": "a", "count": ' + "9" * 5000 + "}", 400, "body", id="a 5000-digit number"),
    _request("standard", '{"message": "x", "attributes": ' + "[" * 5000 + "]" * 5000 + "}", 400, "body",
             id="nested 5000 deep"),
    _request("standard", '{"message": "a", "count": 1e3}', 400, "count", id="count as a float"),
    _request("standard", '{"message": "a", "count": -1}', 400, "count", id="negative count"),
    _request("standard", '{"message": "a", "count": null}', 400, "count", id="null count"),
    # Content types a cross-site form can send, and others that are not JSON.
    _request("standard", "message=hi", 415, "Content-Type", {"Content-Type": "application/x-www-form-urlencoded"},
             id="form"),
    _request("standard", '--x\r\nContent-Disposition: form-data; name="message"\r\n\r\nhi\r\n--x--', 415,
             "Content-Type", {"Content-Type": "multipart/form-data; boundary=x"}, id="multipart"),
    _request("standard", '{"message": "hi"}', 415, "Content-Type", {"Content-Type": "text/plain"}, id="text/plain"),
    _request("standard", "<message>hi</message>", 415, "Content-Type", {"Content-Type": "application/xml"},
             id="XML"),
    _request("standard", '{"message": "hi"}', 415, "Content-Type", {"Content-Type": ""}, id="no content type"),
    # Encodings.
    _request("standard", '{"message": "caf\xe9"}'.encode("latin-1"), 415, "Content-Type",
             {"Content-Type": "application/json; charset=latin-1"}, id="latin-1 charset"),
    _request("standard", '{"message": "hi"}'.encode("utf-16"), 415, "Content-Type",
             {"Content-Type": "application/json; charset=utf-16"}, id="UTF-16 charset"),
    _request("standard", b'{"message": "caf\xe9"}', 400, "body", id="invalid UTF-8"),
    _request("standard", '{"message": "hi"}'.encode("utf-16"), 400, "body", id="UTF-16 without charset"),
    _request("standard", b"\xff\xfe{}", 400, "body", id="byte order mark"),
    _request("standard", '{"message": "x"}', 415, "Content-Encoding", {"Content-Encoding": "gzip"}, id="gzip"),
    _request("standard", '{"message": "x"}', 415, "Content-Encoding", {"Content-Encoding": "deflate"}, id="deflate"),
    _request("standard", '{"message": "\\ud800"}', 400, "message", id="escaped lone surrogate"),
    # Sizes: the request cap, and the queue's MaximumMessageSize (body plus attributes).
    _request("standard", "x" * (9 * 1024 * 1024), 413, "body", id="9 MiB body"),
    # (a row given as a function gets the queue's MaximumMessageSize: 256 KiB on LocalStack, 1 MiB on moto)
    _request("standard", lambda limit: {"message": "x" * (limit + 1)}, 413, "message",
             id="message one byte over the queue limit"),
    _request("standard", lambda limit: {"message": "\u00e9" * (limit // 2) + "x"}, 413, "message",
             id="message over the limit in UTF-8 bytes"),
    _request("standard", lambda limit: {"message": "x" * (limit - 100), "attributes": {"a": "y" * 100}}, 413,
             "message", id="message plus attributes over the limit"),
    _request("fifo", lambda limit: {"message": "x" * (limit + 1), "group_id": "g"}, 413, "message",
             id="FIFO message over the limit"),
]


def test_the_malformed_request_table_is_at_least_fifty_rows():
    assert len(MALFORMED_REQUESTS) >= 50


@pytest.mark.parametrize("queue, data, headers, status, field", MALFORMED_REQUESTS)
def test_a_malformed_request_gets_4xx_json_naming_the_field_and_sends_nothing(producers, queue, data, headers,
                                                                              status, field):
    sqs, clients = producers
    client, queue_url = clients[queue]
    if callable(data):
        data = data(client.application.extensions["sqs_app"].queue.info().max_message_size)
    body = json.dumps(data) if isinstance(data, (dict, list)) else data
    response = client.post("/produce", data=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.is_json
    answer = response.get_json()
    assert answer["field"] == field and answer["error"]
    assert sqs.drain(queue_url, wait=0) == [], "a refused request sent something"


def test_a_5000_digit_number_is_refused_in_plain_words(api):
    response = api.post("/produce", data='{"message": "a", "count": ' + "9" * 5000 + "}", content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert "5000 digits" in error and "set_int_max_str_digits" not in error


def test_number_attributes_given_as_json_numbers_reach_sqs_as_written(api):
    """JSON numbers are not read as Python floats: 1e2 stays "1e2", not "100.0", and 38 significant
    digits are not rounded to 17."""
    written = ["1e2", "-0.5", "12345678901234567890.123456789012345678", "7", "1.50", "-2E-3", "-0", "-0.0"]
    attributes = ", ".join(f'"n{i}": {text}' for i, text in enumerate(written))
    response = api.post("/produce", data='{"message": "m", "attributes": {%s}}' % attributes,
                        content_type="application/json")
    assert response.status_code == 200, response.get_json()
    [message] = api.sqs.drain(api.queue_url())
    assert {name: a["StringValue"] for name, a in message["MessageAttributes"].items()} == \
        {f"n{i}": text for i, text in enumerate(written)}
    assert {a["DataType"] for a in message["MessageAttributes"].values()} == {"Number"}


def test_a_queue_deleted_after_it_was_resolved_is_resolved_again(moto_endpoint):
    """The queue goes away between two requests (deleted, or the endpoint restarted empty): the next
    request re-creates it and is sent, instead of answering "unreachable". Without CREATE_QUEUE the
    answer names the missing queue."""
    from app import create_app
    from settings import Settings
    from tests.conftest import producer_app

    name = moto_endpoint.queue_name("gone")
    client, url = producer_app(moto_endpoint, name)
    assert client.post("/produce", json={"message": "first"}).status_code == 200
    moto_endpoint.client.delete_queue(QueueUrl=url)
    response = client.post("/produce", json={"message": "second"})
    assert response.status_code == 200, response.get_json()
    assert [m["Body"] for m in moto_endpoint.drain(moto_endpoint.client.get_queue_url(QueueName=name)["QueueUrl"])] \
        == ["second"]

    settings = Settings.from_env({"APP_MODE": "producer", "AWS_ENDPOINT_URL": moto_endpoint.url, "CREATE_QUEUE": "false",
                                  "QUEUE_NAME": moto_endpoint.queue_name("never")})
    answer = create_app(settings, start_consumer=False).test_client().post("/produce", json={"message": "m"})
    assert answer.status_code == 503 and "does not exist" in answer.get_json()["error"]
    assert answer.get_json()["sent"] == 0


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


def test_a_large_message_written_with_escapes_is_accepted(api):
    """1,000,000 UTF-8 bytes, but 3 MB as JSON with \\u escapes: under the queue limit, so it is sent."""
    body = json.dumps({"message": "\u00e9" * 500_000})
    assert len(body) > 2_900_000
    response = api.post("/produce", data=body, content_type="application/json")
    assert response.status_code == 200, response.get_json()


def test_options_on_produce_answers_json_405(api):
    response = api.open("/produce", method="OPTIONS")
    assert response.status_code == 405 and response.is_json
