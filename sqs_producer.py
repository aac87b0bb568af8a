"""The SQS producer: validates a produce request completely, then sends it.

    producer = SqsProducer(client, queue)       # queue: sqs_queue.SqsQueue
    producer.produce({"message": "hello", "attributes": {"user": "me"}, "count": 3})
    -> {"sent": 3, "message_ids": [...]}

Everything is checked before the first byte goes to SQS, so a bad request sends nothing. Errors are
`ProduceError`s carrying the HTTP status, the offending field and a sentence saying why; the web
layer turns them into JSON as they are.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

from sqs_queue import SQS_ERRORS, QueueInfo, describe_error, is_queue_missing

log = logging.getLogger(__name__)

MAX_COUNT = 1000
MAX_ATTRIBUTES = 10
BATCH_SIZE = 10
BATCH_BYTES = 262_144          # SQS limit on the summed size of one batch request
MAX_SEND_ATTEMPTS = 3          # per entry that SQS reports as failed without the sender's fault
DEFAULT_GROUP_ID = "default"
REQUEST_FIELDS = {"message", "attributes", "count", "group_id", "dedup_id"}

# Characters SQS accepts in a body or a string attribute: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
_FORBIDDEN_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_\-.]{1,256}")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", re.ASCII)
_DATA_TYPE = re.compile(r"(String|Number|Binary)(\.[A-Za-z0-9_\-.]+)?")
# FIFO group and deduplication ids: alphanumerics and ASCII punctuation, up to 128.
_FIFO_ID = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")


class ProduceError(Exception):
    """A request the producer will not (or could not) send. `to_json()` is the API's answer."""

    def __init__(self, status: int, message: str, field: str | None = None, **details: Any):
        super().__init__(message)
        self.status, self.message, self.field, self.details = status, message, field, details

    def to_json(self) -> dict:
        return {"error": self.message, "field": self.field, **self.details}


def invalid(field: str, message: str, status: int = 400) -> ProduceError:
    return ProduceError(status, message, field)


class _KeepsText:
    def __new__(cls, text: str):
        number = super().__new__(cls, text)
        number.text = text
        return number


class JsonNumber(_KeepsText, float):
    """A JSON fraction that keeps its text: a Number attribute sent as 1e2 or 0.1000000000000000000001
    must reach SQS as written, not as Python's float of it ("100.0", "0.1")."""


class JsonInt(_KeepsText, int):
    """A JSON whole number that keeps its text, for the same reason (-0 stays "-0")."""


@dataclass(frozen=True)
class ProduceRequest:
    """A validated request, in boto3's terms."""

    body: str
    attributes: dict[str, dict]
    count: int
    group_id: str | None
    dedup_id: str | None

    def size_bytes(self) -> int:
        """Message size as SQS counts it: UTF-8 body plus each attribute's name, type and value."""
        size = len(self.body.encode("utf-8"))
        for name, attr in self.attributes.items():
            value = attr.get("BinaryValue")
            if value is None:
                value = attr["StringValue"].encode("utf-8")
            size += len(name.encode("utf-8")) + len(attr["DataType"].encode("utf-8")) + len(value)
        return size


def parse_request(payload: Any) -> ProduceRequest:
    """Check everything that does not depend on the queue. Raises ProduceError(400)."""
    if not isinstance(payload, dict):
        raise invalid("body", "the request body must be a JSON object")
    unknown = sorted(set(payload) - REQUEST_FIELDS)
    if unknown:
        raise invalid(unknown[0], f"unknown field; allowed fields are {', '.join(sorted(REQUEST_FIELDS))}")

    body = payload.get("message")
    if body is None:
        raise invalid("message", "message is required")
    if not isinstance(body, str):
        raise invalid("message", "message must be a string (send JSON as text: serialise it first)")
    if body == "":
        raise invalid("message", "message must not be empty")
    _check_chars("message", body)

    count = payload.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int):
        raise invalid("count", f"count must be a whole number from 1 to {MAX_COUNT}")
    if not 1 <= count <= MAX_COUNT:
        raise invalid("count", f"count must be from 1 to {MAX_COUNT}; got {count}")

    return ProduceRequest(
        body=body,
        attributes=_parse_attributes(payload.get("attributes")),
        count=count,
        group_id=_parse_fifo_id(payload, "group_id"),
        dedup_id=_parse_fifo_id(payload, "dedup_id"),
    )


def check_against_queue(request: ProduceRequest, queue: QueueInfo) -> ProduceRequest:
    """Check what depends on the queue (FIFO fields, size) and fill in FIFO defaults."""
    size = request.size_bytes()
    if size > queue.max_message_size:
        raise invalid("message", f"message is {size} bytes with its attributes; this queue takes at most "
                                 f"{queue.max_message_size} bytes", status=413)
    if not queue.is_fifo:
        for name in ("group_id", "dedup_id"):
            if getattr(request, name) is not None:
                raise invalid(name, f"{name} is only for FIFO queues; {queue.url} is a standard queue")
        return request
    dedup_id = request.dedup_id
    if dedup_id is not None and request.count > 1 and len(f"{dedup_id}-{request.count}") > 128:
        raise invalid("dedup_id", "dedup_id is too long to number a burst (at most 128 characters "
                                  "including the '-N' suffix)")
    return ProduceRequest(request.body, request.attributes, request.count,
                          request.group_id or DEFAULT_GROUP_ID, dedup_id)


def build_entries(request: ProduceRequest, queue: QueueInfo) -> list[dict]:
    """SendMessageBatch entries for the whole burst, in order."""
    entries = []
    for i in range(request.count):
        entry: dict[str, Any] = {"Id": str(i), "MessageBody": request.body}
        if request.attributes:
            entry["MessageAttributes"] = request.attributes
        if queue.is_fifo:
            entry["MessageGroupId"] = request.group_id
            if request.dedup_id is not None:
                entry["MessageDeduplicationId"] = (request.dedup_id if request.count == 1
                                                   else f"{request.dedup_id}-{i + 1}")
            elif request.count > 1 or not queue.content_based_deduplication:
                # Identical bodies in a burst must not be deduplicated into one message.
                entry["MessageDeduplicationId"] = uuid.uuid4().hex
        entries.append(entry)
    return entries


class SqsProducer:
    """Sends validated produce requests to the app's queue."""

    def __init__(self, client, queue):
        self._client = client
        self._queue = queue   # sqs_queue.SqsQueue
        # Set when the app stops (time.monotonic()): a burst still sending then stops between two
        # SQS calls and answers 503 with what it sent, rather than being cut off with no answer.
        self.stop_sending_at: float | None = None

    def produce(self, payload: Any) -> dict:
        request = parse_request(payload)
        try:
            return self._produce(request)
        except _QueueGone:
            # Deleted (or the endpoint restarted) since it was resolved, before anything was sent:
            # resolve it again (re-created where CREATE_QUEUE allows) and send once more.
            return self._produce(request, retry=False)

    def _produce(self, request: ProduceRequest, retry: bool = True) -> dict:
        info = self._call(self._queue.info, sent=[])
        request = check_against_queue(request, info)
        message_ids = self._send(info, build_entries(request, info), retry)
        log.info("sent %d message(s) to %s", len(message_ids), info.url)
        return {"sent": len(message_ids), "message_ids": message_ids}

    def _send(self, queue: QueueInfo, entries: list[dict], retry: bool = False) -> list[str]:
        message_ids: list[str] = []
        request_size = ProduceRequest(entries[0]["MessageBody"], entries[0].get("MessageAttributes", {}),
                                      1, None, None).size_bytes()
        batch_bytes = max(BATCH_BYTES, queue.max_message_size)
        per_batch = max(1, min(BATCH_SIZE, batch_bytes // max(1, request_size)))
        for start in range(0, len(entries), per_batch):
            if self.stop_sending_at is not None and time.monotonic() >= self.stop_sending_at:
                raise ProduceError(503, f"the app is shutting down: sent {len(message_ids)} of {len(entries)}; "
                                        f"send the rest again", None, sent=len(message_ids),
                                   message_ids=message_ids, **self._queue.describe())
            message_ids.extend(self._send_batch(queue.url, entries[start:start + per_batch], message_ids, retry))
        return message_ids

    def _send_batch(self, queue_url: str, batch: list[dict], sent: list[str], retry: bool = False) -> list[str]:
        ids: dict[str, str] = {}
        pending = batch
        for attempt in range(1, MAX_SEND_ATTEMPTS + 1):
            response = self._call(lambda: self._client.send_message_batch(QueueUrl=queue_url, Entries=pending),
                                  sent=sent + [ids[e["Id"]] for e in batch if e["Id"] in ids], retry=retry)
            for ok in response.get("Successful", []):
                ids[ok["Id"]] = ok["MessageId"]
            failed = response.get("Failed", [])
            if not failed:
                break
            refused = [f for f in failed if f.get("SenderFault")]
            if refused or attempt == MAX_SEND_ATTEMPTS:
                f = (refused or failed)[0]
                done = [ids[e["Id"]] for e in batch if e["Id"] in ids]
                raise ProduceError(502, f"SQS refused message {int(f['Id']) + 1}: {f.get('Code')}: "
                                        f"{f.get('Message', '')}", "message", sent=len(sent) + len(done),
                                   message_ids=sent + done, **self._queue.describe())
            failed_ids = {f["Id"] for f in failed}
            pending = [e for e in pending if e["Id"] in failed_ids]
        # Keep the burst's order in the answer.
        return [ids[e["Id"]] for e in batch]

    def _call(self, fn, sent: list[str], retry: bool = False):
        """Run one SQS call; turn its failure into a 502/503 naming endpoint, region and queue
        (_QueueGone instead when the queue is missing, nothing is sent yet and `retry` allows)."""
        try:
            return fn()
        except SQS_ERRORS as exc:
            if is_queue_missing(exc):
                self._queue.forget()
                if retry and not sent:
                    raise _QueueGone() from exc
                status, what = 503, f"the queue {self._queue.name} does not exist"
            elif isinstance(exc, ClientError):
                status, what = 502, "SQS refused the request"
            elif isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
                status, what = 503, "no AWS credentials found"
            else:
                status, what = 503, "SQS is unreachable"
            log.warning("%s: %s", what, describe_error(exc))
            raise ProduceError(status, f"{what}: {describe_error(exc)}", None, sent=len(sent),
                               message_ids=list(sent), **self._queue.describe()) from exc


class _QueueGone(Exception):
    """The queue went missing before anything of the request was sent: worth one more try."""


def _check_chars(field: str, text: str) -> None:
    bad = _FORBIDDEN_CHAR.search(text)
    if bad:
        raise invalid(field, f"{field} contains a character SQS does not allow "
                             f"(U+{ord(bad.group()):04X} at position {bad.start()})")


def _parse_fifo_id(payload: dict, field: str) -> str | None:
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not _FIFO_ID.fullmatch(value):
        raise invalid(field, f"{field} must be 1-128 letters, digits or ASCII punctuation")
    return value


def _parse_attributes(raw: Any) -> dict[str, dict]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid("attributes", "attributes must be an object of name: value")
    if len(raw) > MAX_ATTRIBUTES:
        raise invalid("attributes", f"at most {MAX_ATTRIBUTES} attributes per message; got {len(raw)}")
    return {name: _parse_attribute(name, value) for name, value in raw.items()}


def _parse_attribute(name: str, value: Any) -> dict:
    field = f"attributes.{name}"
    if name == "":
        raise invalid(field, "an attribute name is empty; names are 1-256 characters")
    lowered = name.lower()
    if (not _ATTRIBUTE_NAME.fullmatch(name) or ".." in name or name.startswith(".") or name.endswith(".")
            or lowered.startswith("aws.") or lowered.startswith("amazon.")):
        raise invalid(field, "attribute names are 1-256 letters, digits, '_', '-' or '.', with no leading, "
                             "trailing or double '.', and not starting with 'AWS.' or 'Amazon.'")
    if isinstance(value, str):
        value = {"DataType": "String", "StringValue": value}
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"DataType": "Number", "StringValue": getattr(value, "text", None) or repr(value)}
    if not isinstance(value, dict):
        raise invalid(field, 'an attribute value is a string, a number, or {"DataType": ..., '
                             '"StringValue" or "BinaryValue": ...}')
    unknown = sorted(set(value) - {"DataType", "StringValue", "BinaryValue"})
    if unknown:
        raise invalid(field, f"unknown key {unknown[0]!r}; use DataType with StringValue or BinaryValue")
    data_type = value.get("DataType")
    if not isinstance(data_type, str) or not _DATA_TYPE.fullmatch(data_type) or len(data_type) > 256:
        raise invalid(field, "DataType must be String, Number or Binary (optionally with a '.label')")

    if data_type.startswith("Binary"):
        if "StringValue" in value or not isinstance(value.get("BinaryValue"), str):
            raise invalid(field, "a Binary attribute needs BinaryValue as a base64 string")
        try:
            data = base64.b64decode(value["BinaryValue"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid(field, "BinaryValue is not valid base64") from None
        if not data:
            raise invalid(field, "BinaryValue must not be empty")
        return {"DataType": data_type, "BinaryValue": data}

    text = value.get("StringValue")
    if "BinaryValue" in value or not isinstance(text, str):
        raise invalid(field, f"a {data_type} attribute needs StringValue as a string")
    if text == "":
        raise invalid(field, "attribute values must not be empty")
    _check_chars(field, text)
    if data_type.startswith("Number"):
        _check_number(field, text)
    return {"DataType": data_type, "StringValue": text}


def _check_number(field: str, text: str) -> None:
    if not _NUMBER.fullmatch(text):
        raise invalid(field, f"{text!r} is not a number")
    number = Decimal(text)
    # SQS: up to 38 significant digits, and 0 or a magnitude from 10^-128 to 10^+126.
    significant = "".join(map(str, number.as_tuple().digits)).strip("0")
    if len(significant) > 38 or (
            number != 0 and not Decimal("1e-128") <= abs(number) <= Decimal("1e126")):
        raise invalid(field, "a Number attribute has at most 38 significant digits and is 0 or between "
                             "10^-128 and 10^126 in magnitude")
