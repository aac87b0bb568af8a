"""Settings come from the environment; a bad value names its variable and what it accepts."""

import pytest

from settings import Settings, SettingsError


def test_defaults_run_everything_on_the_embedded_endpoint():
    s = Settings.from_env({})
    assert (s.app_mode, s.async_mode, s.backend, s.endpoint_url) == ("all", "threading", "embedded", None)
    assert (s.host, s.port, s.region, s.queue_name) == ("127.0.0.1", 5000, "us-east-1", "sample-queue")
    assert (s.wait_time_seconds, s.max_messages, s.create_queue) == (20, 10, True)
    assert s.runs_producer and s.runs_consumer


def test_an_endpoint_variable_selects_the_endpoint_backend():
    s = Settings.from_env({"AWS_ENDPOINT_URL": "http://localstack:4566"})
    assert (s.backend, s.endpoint_url, s.create_queue) == ("endpoint", "http://localstack:4566", True)
    # botocore's service-specific variable wins over the general one, as in botocore.
    s = Settings.from_env({"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_SQS": "http://b:2"})
    assert s.endpoint_url == "http://b:2"


def test_real_aws_is_opt_in_and_does_not_create_queues_unless_asked():
    s = Settings.from_env({"SQS_BACKEND": "aws"})
    assert (s.backend, s.create_queue, s.endpoint_url) == ("aws", False, None)
    assert Settings.from_env({"SQS_BACKEND": "aws", "CREATE_QUEUE": "true"}).create_queue is True


def test_modes_are_case_insensitive_and_select_roles():
    producer = Settings.from_env({"APP_MODE": "Producer"})
    assert producer.runs_producer and not producer.runs_consumer
    consumer = Settings.from_env({"APP_MODE": "consumer", "ASYNC_MODE": "EVENTLET"})
    assert consumer.runs_consumer and not consumer.runs_producer and consumer.async_mode == "eventlet"


@pytest.mark.parametrize("env, variable", [
    ({"APP_MODE": "both"}, "APP_MODE"),
    ({"ASYNC_MODE": "gevent"}, "ASYNC_MODE"),
    ({"PORT": "http"}, "PORT"),
    ({"MAX_BROWSERS": "0"}, "MAX_BROWSERS"),
    ({"PORT": "70000"}, "PORT"),
    ({"WAIT_TIME_SECONDS": "30"}, "WAIT_TIME_SECONDS"),
    ({"WAIT_TIME_SECONDS": "-1"}, "WAIT_TIME_SECONDS"),
    ({"MAX_MESSAGES": "11"}, "MAX_MESSAGES"),
    ({"VISIBILITY_TIMEOUT": "0"}, "VISIBILITY_TIMEOUT"),
    ({"SQS_BACKEND": "sqs"}, "SQS_BACKEND"),
    ({"SQS_BACKEND": "endpoint"}, "AWS_ENDPOINT_URL"),
    ({"AWS_ENDPOINT_URL": "localhost:4566"}, "AWS_ENDPOINT_URL"),
    ({"QUEUE_NAME": "my queue"}, "QUEUE_NAME"),
    ({"QUEUE_NAME": "x" * 81}, "QUEUE_NAME"),
    ({"QUEUE_URL": "sample-queue"}, "QUEUE_URL"),
    ({"CREATE_QUEUE": "maybe"}, "CREATE_QUEUE"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert variable in message and "\n" not in message


def test_allowed_values_are_listed_in_the_error():
    with pytest.raises(SettingsError, match="producer, consumer, all"):
        Settings.from_env({"APP_MODE": "x"})
    with pytest.raises(SettingsError, match="from 0 to 20"):
        Settings.from_env({"WAIT_TIME_SECONDS": "21"})


def test_fifo_queue_names_and_cors_origins_parse():
    s = Settings.from_env({"QUEUE_NAME": "orders.fifo", "CORS_ALLOWED_ORIGINS": "http://a:1, http://b:2"})
    assert s.queue_name == "orders.fifo" and s.cors_allowed_origins == ("http://a:1", "http://b:2")


def test_consumer_name_prefers_explicit_then_pod_name():
    assert Settings.from_env({"CONSUMER_NAME": "me", "POD_NAME": "pod"}).consumer_name == "me"
    assert Settings.from_env({"POD_NAME": "consumer-7f9c"}).consumer_name == "consumer-7f9c"


@pytest.mark.parametrize("env, variable", [
    ({"AWS_REGION": "bad region!"}, "AWS_REGION"),
    ({"AWS_DEFAULT_REGION": "US-EAST-1"}, "AWS_REGION"),
    ({"AWS_REGION": "xx-nowhere-1"}, "AWS_REGION"),                 # unknown to the embedded endpoint
    ({"QUEUE_URL": "http://127.0.0.1:1/000000000000/x"}, "QUEUE_URL"),   # embedded cannot have it
    ({"HISTORY_SIZE": "201"}, "HISTORY_SIZE"),
    ({"POLLERS": "0"}, "POLLERS"),
    ({"AWS_ENDPOINT_URL": "http://"}, "AWS_ENDPOINT_URL"),
    ({"AWS_ENDPOINT_URL": "http://local host:4566"}, "AWS_ENDPOINT_URL"),
    ({"AWS_ENDPOINT_URL": "http://[::1"}, "AWS_ENDPOINT_URL"),
    ({"AWS_ENDPOINT_URL_SQS": "http://localhost:99999"}, "AWS_ENDPOINT_URL_SQS"),
    ({"AWS_ENDPOINT_URL": "http://h:1", "QUEUE_URL": "https://sqs.example/1 2/q"}, "QUEUE_URL"),
    ({"QUEUE_NAME": "q" * 77}, "QUEUE_NAME"),                    # its "-dlq" would be over 80
    ({"QUEUE_NAME": "q" * 73 + ".fifo"}, "QUEUE_NAME"),
    ({"PORT": "1_000"}, "PORT"),
    ({"PORT": "\uff15\uff10\uff10\uff10"}, "PORT"),              # full-width digits
    ({"CORS_ALLOWED_ORIGINS": "*"}, "CORS_ALLOWED_ORIGINS"),
    ({"CORS_ALLOWED_ORIGINS": "https://ok.example, https://x.example/path"}, "CORS_ALLOWED_ORIGINS"),
    ({"CORS_ALLOWED_ORIGINS": "ok.example"}, "CORS_ALLOWED_ORIGINS"),
    ({"CORS_ALLOWED_ORIGINS": "http://a.example:99999"}, "CORS_ALLOWED_ORIGINS"),
    ({"AWS_ENDPOINT_URL": "http://admin:s3cret@localhost:4566"}, "AWS_ENDPOINT_URL"),   # would show in pages
])
def test_more_bad_values_name_the_variable(env, variable):
    with pytest.raises(SettingsError, match=variable.split("/")[0]):
        Settings.from_env(env)


def test_edge_values_that_are_fine():
    assert Settings.from_env({"QUEUE_NAME": "q" * 76}).queue_name == "q" * 76
    assert Settings.from_env({"QUEUE_NAME": "q" * 80, "CREATE_QUEUE": "false"}).queue_name == "q" * 80
    assert Settings.from_env({"AWS_ENDPOINT_URL": "http://[::1]:4566"}).endpoint_url == "http://[::1]:4566"
    assert Settings.from_env({"CORS_ALLOWED_ORIGINS": "HTTP://A.example:8080/"}).cors_allowed_origins == \
        ("http://a.example:8080",)
    # Browsers leave default ports out of Origin, so a listed default port must not stop a match.
    assert Settings.from_env({"CORS_ALLOWED_ORIGINS": "http://a.example:80, https://b.example:443"}
                             ).cors_allowed_origins == ("http://a.example", "https://b.example")


def test_unknown_regions_are_fine_on_an_endpoint():
    assert Settings.from_env({"AWS_REGION": "xx-nowhere-1", "AWS_ENDPOINT_URL": "http://h:1"}).region == "xx-nowhere-1"
