"""A debugging demo must not be a way into a developer's browser or cluster."""

import json
import re

import pytest
import requests
import yaml

from tests.servers import ROOT, endpoint_env, wait_until


def test_no_debug_mode_or_werkzeug_debugger_in_any_shipped_configuration(moto_endpoint, start_app):
    shipped = [ROOT / "Dockerfile", ROOT / "docker-compose.yml", ROOT / "gunicorn.conf.py", ROOT / "app.py",
               *sorted((ROOT / "k8s").rglob("*.yaml")), *sorted((ROOT / ".mirrord").glob("*.json"))]
    for path in shipped:
        code = [line for line in path.read_text().splitlines() if not line.strip().startswith("#")]
        for line in code:
            assert not re.search(r"FLASK_DEBUG|debug\s*=\s*True|use_debugger\s*=\s*True|--reload\b", line), (path, line)
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name()))
    for path in ("/console", "/?__debugger__=yes&cmd=resource&f=style.css"):
        response = app.get(path)
        assert response.status_code in (200, 404) and "Werkzeug Debugger" not in response.text
    # An error answers JSON without a traceback.
    response = app.post("/produce", data="{", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "Traceback" not in response.text


def _handshake(base_url: str, origin: str) -> int:
    return requests.get(base_url + "/socket.io/?EIO=4&transport=polling", headers={"Origin": origin},
                        timeout=5).status_code


def test_socketio_accepts_only_the_apps_own_origin_by_default(moto_endpoint, start_app):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name()))
    assert _handshake(app.base_url, app.base_url) == 200
    assert _handshake(app.base_url, "http://evil.example") == 400


def test_extra_socketio_origins_are_configurable_and_add_to_the_apps_own(moto_endpoint, start_app):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(),
                                   CORS_ALLOWED_ORIGINS="http://Dashboard.local:8080/ , https://ops.example"))
    assert _handshake(app.base_url, "http://dashboard.local:8080") == 200
    assert _handshake(app.base_url, "https://ops.example") == 200
    assert _handshake(app.base_url, app.base_url) == 200, "listing others must not lock the app's own page out"
    assert _handshake(app.base_url, "http://evil.example") == 400
    assert _handshake(app.base_url, "http://dashboard.local:8081") == 400


@pytest.mark.parametrize("content_type, data", [
    ("application/x-www-form-urlencoded", "message=hi"),
    ("multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="message"\r\n\r\nhi\r\n--x--'),
    ("text/plain", '{"message": "hi"}'),   # what a cross-site "simple request" can send
])
def test_produce_refuses_what_a_cross_site_form_can_send(moto_endpoint, start_app, content_type, data):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="producer"))
    response = app.post("/produce", data=data, headers={"Content-Type": content_type,
                                                        "Origin": "http://evil.example"})
    assert response.status_code == 415 and response.json()["field"] == "Content-Type"
    assert app.wait_ready().get("/readyz").json()["messages_visible"] == 0


def test_no_receipt_handles_or_credentials_in_pages_events_or_logs(localstack_endpoint, start_app, listen):
    secret = "s3cr3t-value-never-shown"
    app = start_app(**{**endpoint_env(localstack_endpoint, localstack_endpoint.queue_name(),
                                      LOG_LEVEL="DEBUG"),
                       "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID", "AWS_SECRET_ACCESS_KEY": secret})
    client = listen(app.base_url)
    app.post("/produce", json={"message": "m", "count": 3})
    events = client.wait_messages(3)
    app.post("/produce", json={"message": "poison", "attributes": {"simulate_failure": "x"}})
    wait_until(lambda: client.of("sqs_message_failed"), 20, "a failure event")
    seen = json.dumps([data for _, data in client.events]) + app.get("/").text + app.get("/status").text \
        + app.get("/readyz").text
    app.stop()
    logs = app.logs()
    assert "DEBUG sqs_consumer: received" in logs   # the most talkative level, and still:
    for text in (seen, logs):
        assert secret not in text
        assert "receipthandle" not in text.lower() and "receipt_handle" not in text.lower()
    assert all(set(e) >= {"id", "body"} and not any("receipt" in k.lower() for k in e) for e in events)


def test_containers_and_pods_run_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for role in ("producer", "consumer"):
        [deployment, _] = list(yaml.safe_load_all((ROOT / "k8s" / f"{role}.yaml").read_text()))
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        container = pod["containers"][0]["securityContext"]
        assert container["allowPrivilegeEscalation"] is False and container["capabilities"]["drop"] == ["ALL"]


def test_socketio_client_library_is_served_locally_not_from_a_cdn(moto_endpoint, start_app):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name()))
    page = app.get("/").text
    assert re.findall(r'<script src="([^"]+)"', page) == ["/vendor/socket.io.min.js", "/static/app.js"]
    assert "default-src 'self'" in app.get("/").headers["Content-Security-Policy"]
