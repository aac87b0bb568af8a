"""Configuration: every environment variable the app reads, read here and nowhere else.

`Settings.from_env()` turns the environment into one typed, validated object. A bad value
raises `SettingsError` whose message is one line naming the variable and what it accepts;
`app.py` prints that line and exits, so a typo never becomes a half-working consumer.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping

APP_MODES = ("producer", "consumer", "all")
ASYNC_MODES = ("threading", "eventlet")
# embedded: an in-process moto server; endpoint: AWS_ENDPOINT_URL(_SQS), e.g. LocalStack;
# aws: real AWS through the standard credential chain.
SQS_BACKENDS = ("embedded", "endpoint", "aws")
BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}


class SettingsError(ValueError):
    """A configuration value is unusable; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    app_mode: str = "all"
    async_mode: str = "threading"
    host: str = "127.0.0.1"
    port: int = 5000
    region: str = "us-east-1"
    backend: str = "embedded"
    endpoint_url: str | None = None
    queue_name: str = "sample-queue"
    queue_url: str | None = None
    create_queue: bool = True
    max_receive_count: int = 5
    wait_time_seconds: int = 20
    visibility_timeout: int = 30
    max_messages: int = 10
    pollers: int = 1
    history_size: int = 50
    max_browsers: int = 40
    consumer_name: str = field(default_factory=socket.gethostname)
    cors_allowed_origins: tuple[str, ...] = ()
    log_level: str = "INFO"

    @property
    def runs_producer(self) -> bool:
        return self.app_mode in ("producer", "all")

    @property
    def runs_consumer(self) -> bool:
        return self.app_mode in ("consumer", "all")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read and validate the environment (``os.environ`` unless one is given)."""
        env = _Env(os.environ if environ is None else environ)

        endpoint_url = env.text("AWS_ENDPOINT_URL_SQS") or env.text("AWS_ENDPOINT_URL")
        backend = env.choice("SQS_BACKEND", SQS_BACKENDS,
                             default="endpoint" if endpoint_url else "embedded")
        if backend == "endpoint" and not endpoint_url:
            raise SettingsError("SQS_BACKEND=endpoint needs AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_SQS "
                                "(for example http://localhost:4566)")
        if endpoint_url:
            _check_url("AWS_ENDPOINT_URL_SQS" if env.text("AWS_ENDPOINT_URL_SQS") else "AWS_ENDPOINT_URL",
                       endpoint_url, "http://localhost:4566")
        if backend == "embedded":
            endpoint_url = None  # the embedded server picks its own port

        queue_url = env.text("QUEUE_URL")
        queue_name = env.text("QUEUE_NAME") or "sample-queue"
        if queue_url:
            _check_url("QUEUE_URL", queue_url, "https://sqs.us-east-1.amazonaws.com/123456789012/orders")
        if queue_url and backend == "embedded":
            raise SettingsError("QUEUE_URL needs AWS_ENDPOINT_URL (or SQS_BACKEND=aws): the embedded endpoint "
                                "makes its own queue from QUEUE_NAME")
        region = env.text("AWS_REGION") or env.text("AWS_DEFAULT_REGION") or "us-east-1"
        _check_region(region, backend)
        create_queue = env.boolean("CREATE_QUEUE", default=backend != "aws")
        if not queue_url:
            _check_queue_name(queue_name, with_dead_letter_queue=create_queue)

        return cls(
            app_mode=env.choice("APP_MODE", APP_MODES, default="all"),
            async_mode=env.choice("ASYNC_MODE", ASYNC_MODES, default="threading"),
            host=env.text("HOST") or "127.0.0.1",
            port=env.integer("PORT", 5000, 1, 65535),
            region=region,
            backend=backend,
            endpoint_url=endpoint_url,
            queue_name=queue_name,
            queue_url=queue_url,
            # Creating queues is expected on the embedded endpoint and LocalStack; on AWS it
            # must be asked for, since it costs money and needs IAM rights.
            create_queue=create_queue,
            max_receive_count=env.integer("MAX_RECEIVE_COUNT", 5, 1, 1000),
            wait_time_seconds=env.integer("WAIT_TIME_SECONDS", 20, 0, 20),
            visibility_timeout=env.integer("VISIBILITY_TIMEOUT", 30, 1, 43200),
            max_messages=env.integer("MAX_MESSAGES", 10, 1, 10),
            pollers=env.integer("POLLERS", 1, 1, 10),
            # The page keeps 200 rows; more history than that would never be shown.
            history_size=env.integer("HISTORY_SIZE", 50, 0, 200),
            max_browsers=env.integer("MAX_BROWSERS", 40, 1, 1000),
            consumer_name=env.text("CONSUMER_NAME") or env.text("POD_NAME") or socket.gethostname(),
            cors_allowed_origins=_origins(env.text("CORS_ALLOWED_ORIGINS")),
            log_level=env.choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO",
                                 transform=str.upper),
        )


def _check_region(region: str, backend: str) -> None:
    variable = "AWS_REGION/AWS_DEFAULT_REGION"
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", region):
        raise SettingsError(f"{variable} must be a region name like us-east-1; got {region!r}")
    if backend == "embedded":
        import boto3   # the embedded moto server knows exactly the regions boto3 lists for SQS

        known = boto3.session.Session().get_available_regions("sqs")
        if region not in known:
            raise SettingsError(f"{variable}: the embedded endpoint does not know {region!r}; use one of "
                                f"{', '.join(sorted(known)[:6])}, ...")


def _check_queue_name(name: str, with_dead_letter_queue: bool) -> None:
    base = name[:-5] if name.endswith(".fifo") else name
    if not (1 <= len(name) <= 80) or not base or not all(c.isascii() and (c.isalnum() or c in "-_")
                                                         for c in base):
        raise SettingsError(f"QUEUE_NAME must be 1-80 letters, digits, '-' or '_' (FIFO names end in "
                            f"'.fifo'), got {name!r}")
    # The app creates `<name>-dlq` (`<name>-dlq.fifo`) beside it, and SQS names stop at 80 characters.
    if with_dead_letter_queue and len(name) > 76:
        raise SettingsError(f"QUEUE_NAME is {len(name)} characters; with CREATE_QUEUE the app also creates its "
                            f"dead-letter queue '<name>-dlq', so at most 76 (or set CREATE_QUEUE=false)")


def _check_url(variable: str, url: str, example: str) -> None:
    """A URL botocore can use: http(s), a host name or address, an optional numeric port."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SettingsError(f"{variable} is not a valid URL ({exc}): {url!r}; for example {example}") from None
    if parts.username is not None or parts.password is not None:
        raise SettingsError(f"{variable} must not hold credentials (they would show in pages and logs); boto3 "
                            f"takes them from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or its credential chain")
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not re.fullmatch(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+", host) \
            or any(c.isspace() for c in url) or (port is not None and not 1 <= port <= 65535):
        raise SettingsError(f"{variable} must be an http:// or https:// URL with a host name and an optional "
                            f"port, for example {example}; got {url!r}")


def _origins(raw: str | None) -> tuple[str, ...]:
    """CORS_ALLOWED_ORIGINS: comma-separated origins (scheme://host[:port]), normalised as browsers send
    them: lower case, no trailing slash. The app's own origin is always allowed besides these."""
    origins = []
    for item in (raw or "").split(","):
        origin = item.strip().rstrip("/").lower()
        if not origin:
            continue
        match = re.fullmatch(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?", origin)
        if not match:
            raise SettingsError(f"CORS_ALLOWED_ORIGINS must list origins like https://example.com:8443 (scheme, "
                                f"host and port only, comma-separated; '*' is not accepted: any site could "
                                f"read the live messages); got {item.strip()!r}")
        scheme, host, port = match.groups()
        if port and not 1 <= int(port) <= 65535:
            raise SettingsError(f"CORS_ALLOWED_ORIGINS: port {port} is out of range in {item.strip()!r}")
        # Browsers leave a scheme's default port out of Origin.
        if (scheme, port) in (("http", "80"), ("https", "443")):
            origin = f"{scheme}://{host}"
        origins.append(origin)
    return tuple(origins)


class _Env:
    """Typed reads of one environment mapping; every error names its variable."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def choice(self, name, allowed, default, transform=str.lower):
        raw = self.text(name)
        if raw is None:
            return default
        value = transform(raw)
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            if not re.fullmatch(r"[+-]?[0-9]+", raw):   # int() also takes "1_000" and other scripts' digits
                raise ValueError(raw)
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number from {low} to {high}; got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be a whole number from {low} to {high}; got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return BOOLEAN_WORDS[raw.lower()]
        except KeyError:
            raise SettingsError(f"{name} must be true or false; got {raw!r}") from None
