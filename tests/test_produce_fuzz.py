"""Property-based fuzzing of POST /produce (Hypothesis) against real LocalStack and a moto server:
any JSON value, and any bytes under any content type, gets a 2xx or 4xx JSON answer, never 5xx; what
was accepted reaches the queue exactly as sent; what was refused sends nothing."""

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import producer_app

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(allow_nan=False),
                    st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
attribute_names = st.one_of(st.from_regex(r"[A-Za-z0-9_\-.]{1,12}", fullmatch=True), st.text(max_size=12))
attribute_values = st.one_of(
    st.text(max_size=40), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.fixed_dictionaries({"DataType": st.sampled_from(["String", "Number", "Binary", "String.x", "Text"]),
                           "StringValue": st.one_of(st.text(max_size=20), st.integers())}),
    st.fixed_dictionaries({"DataType": st.just("Binary"),
                           "BinaryValue": st.one_of(st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
                                                    st.text(max_size=10))}),
    json_values,
)
sqs_text = st.text(st.characters(blacklist_categories=("Cs",), min_codepoint=0x20), min_size=1, max_size=60)
valid_payloads = st.fixed_dictionaries(
    {"message": sqs_text},
    optional={"attributes": st.dictionaries(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
                                            st.one_of(sqs_text, st.integers(-10**6, 10**6)), max_size=10),
              "count": st.integers(1, 5)})
payloads = st.one_of(
    valid_payloads,
    json_values,
    st.fixed_dictionaries({"message": st.one_of(st.text(max_size=200), json_values)},
                          optional={"attributes": st.one_of(st.dictionaries(attribute_names, attribute_values,
                                                                            max_size=12), json_values),
                                    "count": st.one_of(st.integers(-2, 12), json_values),
                                    "group_id": st.one_of(st.text(max_size=10), json_values),
                                    "dedup_id": st.one_of(st.text(max_size=10), json_values)}),
)


@pytest.fixture(scope="module", params=["localstack", "moto"])
def fuzz_api(request):
    sqs = request.getfixturevalue(f"{request.param}_endpoint")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "test")
        client, queue_url = producer_app(sqs, sqs.queue_name("fuzz"))
        yield client, sqs, queue_url


OUTCOMES: dict[str, dict[str, int]] = {}   # per SQS server: how many were accepted and refused


def _check_answer_and_queue(sqs, queue_url, response, payload) -> None:
    """The answer is 2xx or 4xx JSON; the queue holds exactly what an accepted `payload` asked for."""
    assert response.is_json
    body = response.get_json()
    assert 200 <= response.status_code < 500, body
    received = sqs.drain(queue_url, wait=0)
    outcomes = OUTCOMES.setdefault(sqs.name, {"accepted": 0, "refused": 0})
    outcomes["accepted" if response.status_code == 200 else "refused"] += 1
    if response.status_code != 200:
        assert body["error"] and "field" in body
        assert received == [], "a refused request sent something"
        return
    assert body["sent"] == len(received) == payload.get("count", 1)
    assert sorted(m["MessageId"] for m in received) == sorted(body["message_ids"])
    for message in received:
        assert message["Body"] == payload["message"]
        sent_attributes = payload.get("attributes") or {}
        got = message.get("MessageAttributes", {})
        assert set(got) == set(sent_attributes)
        for name, value in sent_attributes.items():
            if isinstance(value, str):
                assert got[name] == {"DataType": "String", "StringValue": value}
            elif isinstance(value, dict) and value["DataType"].startswith("Binary"):
                assert got[name]["BinaryValue"] == base64.b64decode(value["BinaryValue"])
            elif isinstance(value, dict):
                assert got[name]["StringValue"] == value["StringValue"]
            else:   # a number: the Number shorthand
                assert got[name] == {"DataType": "Number", "StringValue": repr(value)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
def test_any_json_gets_2xx_or_4xx_and_the_queue_gets_exactly_what_was_accepted(fuzz_api, payload):
    client, sqs, queue_url = fuzz_api
    response = client.post("/produce", data=json.dumps(payload), content_type="application/json")
    _check_answer_and_queue(sqs, queue_url, response, payload)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """Overwrite, insert or cut single bytes: (position, byte) with byte 256 meaning "cut here"."""
    for position, byte in edits:
        i = position % (len(data) + 1)
        data = data[:i] + data[i + 1:] if byte == 256 else data[:i] + bytes([byte]) + data[i:]
    return data


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(_mutate, valid_payloads.map(lambda p: json.dumps(p, ensure_ascii=False).encode()),
              st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 256)), min_size=1, max_size=3)),
    valid_payloads.map(lambda p: json.dumps(p, ensure_ascii=False).encode()),
)
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "application/JSON",
                                 "application/vnd.api+json", "application/json; charset=latin-1", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data", "", "*/*"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=raw_bodies, content_type=content_types, encoding=st.sampled_from([None, "gzip", "identity", "br"]))
def test_any_bytes_under_any_content_type_get_2xx_or_4xx_json(fuzz_api, data, content_type, encoding):
    client, sqs, queue_url = fuzz_api
    headers = {"Content-Type": content_type, **({"Content-Encoding": encoding} if encoding else {})}
    response = client.post("/produce", data=data, headers=headers)
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if response.status_code == 200:
        assert isinstance(payload, dict), "only a JSON object is accepted"
    _check_answer_and_queue(sqs, queue_url, response, payload)


def test_the_fuzzing_above_exercised_both_outcomes():
    """Guard against a strategy that only ever produces refusals (the queue check would then be idle)."""
    assert set(OUTCOMES) == {"localstack", "moto"}, OUTCOMES
    for outcomes in OUTCOMES.values():
        assert outcomes["accepted"] >= 5 and outcomes["refused"] >= 5, OUTCOMES
