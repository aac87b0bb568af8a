"""Validation of produce requests (pure functions: no SQS needed)."""

import base64

import pytest

from sqs_producer import (DEFAULT_GROUP_ID, ProduceError, ProduceRequest, build_entries, check_against_queue,
                          SqsProducer, parse_request)
from sqs_queue import QueueInfo
from tests.bad_requests import BAD_FIFO_PAYLOADS, BAD_PAYLOADS

STANDARD = QueueInfo(url="http://sqs/q", arn="arn:q", is_fifo=False, content_based_deduplication=False,
                     max_message_size=262_144, dead_letter_arn=None, max_receive_count=None)
FIFO = QueueInfo(url="http://sqs/q.fifo", arn="arn:q.fifo", is_fifo=True, content_based_deduplication=False,
                 max_message_size=262_144, dead_letter_arn=None, max_receive_count=None)


def rejected(payload, queue=STANDARD) -> ProduceError:
    with pytest.raises(ProduceError) as raised:
        check_against_queue(parse_request(payload), queue)
    return raised.value


def test_a_plain_message_is_one_string_entry():
    request = check_against_queue(parse_request({"message": "hello"}), STANDARD)
    assert build_entries(request, STANDARD) == [{"Id": "0", "MessageBody": "hello"}]


def test_attribute_shorthands_become_sqs_attributes():
    request = parse_request({"message": "m", "attributes": {
        "user": "me", "priority": 5, "ratio": 0.5,
        "blob": {"DataType": "Binary", "BinaryValue": base64.b64encode(b"\x00\x01").decode()},
        "price": {"DataType": "Number.euro", "StringValue": "-1.5e3"}}})
    assert request.attributes == {
        "user": {"DataType": "String", "StringValue": "me"},
        "priority": {"DataType": "Number", "StringValue": "5"},
        "ratio": {"DataType": "Number", "StringValue": "0.5"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        "price": {"DataType": "Number.euro", "StringValue": "-1.5e3"},
    }


@pytest.mark.parametrize("payload, field", BAD_PAYLOADS)
def test_bad_requests_name_the_field(payload, field):
    error = rejected(payload)
    assert error.status == 400
    assert error.field == field
    assert error.to_json()["error"] and error.to_json()["field"] == field


def test_size_counts_utf8_body_and_attributes_against_the_queue_limit():
    small = QueueInfo(**{**STANDARD.__dict__, "max_message_size": 1024})
    # 1,020 bytes of body (510 two-byte characters) + "a" + "String" + "xyz" = 1,030 bytes > 1,024.
    error = rejected({"message": "é" * 510, "attributes": {"a": "xyz"}}, small)
    assert (error.status, error.field) == (413, "message")
    assert "1030 bytes" in error.message and "1024" in error.message
    exact = parse_request({"message": "é" * 507, "attributes": {"a": "xyz"}})
    assert exact.size_bytes() == 1024
    check_against_queue(exact, small)  # exactly at the limit is fine


@pytest.mark.parametrize("payload, field", BAD_FIFO_PAYLOADS)
def test_fifo_ids_are_checked(payload, field):
    assert rejected(payload, FIFO).field == field


def test_fifo_gets_a_default_group_and_distinct_dedup_ids_for_a_burst():
    request = check_against_queue(parse_request({"message": "same", "count": 3}), FIFO)
    entries = build_entries(request, FIFO)
    assert [e["MessageGroupId"] for e in entries] == [DEFAULT_GROUP_ID] * 3
    assert len({e["MessageDeduplicationId"] for e in entries}) == 3


def test_a_given_dedup_id_is_kept_or_numbered_across_a_burst():
    one = build_entries(check_against_queue(parse_request({"message": "m", "dedup_id": "d", "group_id": "g"}), FIFO), FIFO)
    assert (one[0]["MessageDeduplicationId"], one[0]["MessageGroupId"]) == ("d", "g")
    burst = build_entries(check_against_queue(parse_request({"message": "m", "dedup_id": "d", "count": 2}), FIFO), FIFO)
    assert [e["MessageDeduplicationId"] for e in burst] == ["d-1", "d-2"]


def test_content_based_dedup_leaves_a_single_message_to_sqs():
    queue = QueueInfo(**{**FIFO.__dict__, "content_based_deduplication": True})
    entries = build_entries(check_against_queue(parse_request({"message": "m"}), queue), queue)
    assert "MessageDeduplicationId" not in entries[0]


def test_size_of_binary_attribute_counts_decoded_bytes():
    request = ProduceRequest("b", {"k": {"DataType": "Binary", "BinaryValue": b"1234"}}, 1, None, None)
    assert request.size_bytes() == 1 + 1 + 6 + 4


@pytest.mark.parametrize("value, ok", [
    ("0", True), ("-5", True), ("1e126", True), ("-1e126", True), ("1e-128", True), ("-2.5e-128", True),
    ("1e127", False), ("-1e128", False), ("1e-129", False), ("1e-200", False),
    ("12345678901234567890123456789012345678", True), ("123456789012345678901234567890123456789", False),
    ("1.00000000000000000000000000000000000000000", True),   # trailing zeros are not significant
])
def test_number_attributes_follow_the_sqs_range(value, ok):
    payload = {"message": "m", "attributes": {"n": {"DataType": "Number", "StringValue": value}}}
    if ok:
        parse_request(payload)
    else:
        with pytest.raises(ProduceError) as raised:
            parse_request(payload)
        assert raised.value.field == "attributes.n"


def test_a_burst_stops_between_calls_once_the_app_is_stopping_and_says_what_it_sent(moto_endpoint):
    """Shutdown sets stop_sending_at: the burst stops before its next SQS call and the error carries
    exactly the ids sent, which are exactly what the queue holds."""
    import time

    from settings import Settings
    from sqs_queue import SqsQueue

    url = moto_endpoint.create_queue()
    settings = Settings.from_env({"AWS_ENDPOINT_URL": moto_endpoint.url, "QUEUE_URL": url, "CREATE_QUEUE": "false"})
    client = moto_endpoint.client
    producer = SqsProducer(client, SqsQueue(client, settings, moto_endpoint.url))
    calls = []
    send = client.send_message_batch

    def counting_send(**kwargs):
        calls.append(len(kwargs["Entries"]))
        if len(calls) == 3:
            producer.stop_sending_at = time.monotonic()   # SIGTERM arrives during the third call
        return send(**kwargs)

    client.send_message_batch = counting_send
    try:
        with pytest.raises(ProduceError) as raised:
            producer.produce({"message": "x" * 200_000, "count": 50})
    finally:
        del client.send_message_batch
    error = raised.value
    assert error.status == 503 and "shutting down" in error.message
    assert error.details["sent"] == sum(calls) == len(error.details["message_ids"]) < 50
    assert moto_endpoint.depth(url) == error.details["sent"]
