"""Property-based fuzzing of POST /produce (Hypothesis) against a real moto server: every answer is
2xx or 4xx JSON, never 5xx; what was accepted reaches the queue exactly as sent; what was refused
sends nothing."""

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from settings import Settings

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


@pytest.fixture(scope="module")
def fuzz_api(moto_endpoint):
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    name = moto_endpoint.queue_name("fuzz")
    app = create_app(Settings.from_env({"APP_MODE": "producer", "AWS_ENDPOINT_URL": moto_endpoint.url,
                                        "QUEUE_NAME": name}), start_consumer=False)
    queue_url = app.extensions["sqs_app"].queue.url()
    return app.test_client(), moto_endpoint, queue_url


OUTCOMES = {"accepted": 0, "refused": 0}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
def test_any_json_gets_2xx_or_4xx_and_the_queue_gets_exactly_what_was_accepted(fuzz_api, payload):
    client, sqs, queue_url = fuzz_api
    response = client.post("/produce", data=json.dumps(payload), content_type="application/json")
    assert response.is_json
    body = response.get_json()
    assert 200 <= response.status_code < 500, body
    received = sqs.drain(queue_url, wait=0)
    OUTCOMES["accepted" if response.status_code == 200 else "refused"] += 1
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


def test_the_fuzzing_above_exercised_both_outcomes():
    """Guard against a strategy that only ever produces refusals (the queue check would then be idle)."""
    assert OUTCOMES["accepted"] >= 5 and OUTCOMES["refused"] >= 5, OUTCOMES
