"""Docker, Compose, Kubernetes and mirrord files: valid for the real tools' schemas, consistent with
each other and with the app, and their commands work when run as host processes on real LocalStack."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from app import create_app
from settings import Settings
from tests.conftest import ROOT, Listener, free_port, localstack_python, stop_process, unavailable, wait_until

BIN = Path(sys.executable).parent
K8S = ROOT / "k8s"
MIRRORD_SCHEMA = Path(os.environ.get("MIRRORD_SCHEMA", ROOT.parent / "shared" / "mirrord" / "mirrord-schema.json"))
LOCALSTACK_IMAGE = "localstack/localstack:4.14.0"


def load_yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> dict[tuple[str, str], dict]:
    """Every resource in the default kustomization, by (kind, name)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = {}
    for resource in kustomization["resources"]:
        for doc in load_yaml_docs(K8S / resource):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def container(deployment: dict) -> dict:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def mirrord_configs() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / ".mirrord").glob("*.json"))}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs)


# ---------------------------------------------------------------------------- the real tools' schemas


def test_dockerfile_passes_hadolint():
    result = run([str(BIN / "hadolint"), "Dockerfile"])
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_compose_file_is_valid_under_the_compose_specification():
    result = run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path):
    """Control: the compose check can fail."""
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  app:\n    image: x\n    depends_on:\n      db:\n        condition: sometime\n")
    result = run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)])
    assert result.returncode != 0


@pytest.mark.parametrize("name", ["namespace.yaml", "configmap.yaml", "localstack.yaml", "producer.yaml",
                                  "consumer.yaml"])
def test_kubernetes_manifests_pass_strict_validation(name):
    result = run([str(BIN / "kubernetes-validate"), "--strict", f"k8s/{name}"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_builds_and_its_output_validates(tmp_path):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        unavailable("kubectl is not installed (needed for `kubectl kustomize`)")
    built = run([kubectl, "kustomize", "k8s/"])
    assert built.returncode == 0, built.stderr
    out = tmp_path / "all.yaml"
    out.write_text(built.stdout)
    result = run([str(BIN / "kubernetes-validate"), "--strict", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(built.stdout) if doc)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "Deployment", "Deployment", "Namespace",
                     "Service", "Service", "Service"]
    assert "create_queue(" in built.stdout  # the init hook travels in the generated ConfigMap


def test_kubernetes_validator_rejects_a_misspelt_field(tmp_path):
    """Control: --strict catches a field Kubernetes does not know."""
    doc = yaml.safe_load((K8S / "configmap.yaml").read_text())
    doc["metadata"]["nmespace"] = doc["metadata"].pop("namespace")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert run([str(BIN / "kubernetes-validate"), "--strict", str(bad)]).returncode != 0


@pytest.fixture(scope="module")
def mirrord_validator():
    if not MIRRORD_SCHEMA.is_file():
        unavailable(f"mirrord's schema not found at {MIRRORD_SCHEMA} (set MIRRORD_SCHEMA)")
    return jsonschema.Draft202012Validator(json.loads(MIRRORD_SCHEMA.read_text()))


def test_mirrord_configs_are_strict_json_and_valid_against_mirrords_schema(mirrord_validator):
    configs = mirrord_configs()
    assert set(configs) == {"plain", "exclusive", "split"}
    for name, config in configs.items():
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in mirrord_validator.iter_errors(config)]
        assert errors == [], name


@pytest.mark.parametrize("bad", [
    {"copy_target": {"scale_down": True}},                                  # top level: rejected
    {"feature": {"split_queues": "sqs"}},                                   # the blog post's form
    {"feature": {"network": {"outgoing": {"filter": "block", "aws": True}}}},
    {"feature": {"split_queues": {"q": {"queue_type": "sqs", "message_filter": {"a": "^b$"}}}}},
])
def test_mirrords_schema_rejects_the_invalid_forms(mirrord_validator, bad):
    """Control: the forms the blog post ships really are invalid, so the check above means something."""
    assert list(mirrord_validator.iter_errors(bad))


# ---------------------------------------------------------------------------- cross-checks


def test_mirrord_configs_do_their_jobs():
    configs = mirrord_configs()
    assert configs["plain"]["operator"] is False and "copy_target" not in configs["plain"]["feature"]
    for name, config in configs.items():
        feature = config["feature"]
        assert feature["network"]["incoming"]["mode"] == "mirror", name
        # The local page on a fixed port that the Compose producer (5000) does not hold.
        assert feature["network"]["incoming"]["listen_ports"] == [[5000, 5050]], name
        # Messages received locally must show your machine, not the pod: no remote hostname or POD_NAME.
        assert feature["hostname"] is False and "POD_NAME" in feature["env"]["exclude"], name
        # The image's HOST=0.0.0.0 must not open the local dev server to the network.
        assert feature["env"]["override"]["HOST"] == "127.0.0.1", name
        assert feature["fs"] == "local", name
    assert configs["exclusive"]["operator"] is True
    assert configs["exclusive"]["feature"]["copy_target"] == {"scale_down": True}
    split = configs["split"]["feature"]["split_queues"]
    assert configs["split"]["operator"] is True
    for queue in split.values():
        assert queue["queue_type"] == "SQS" and queue["message_filter"]
        for pattern in queue["message_filter"].values():
            assert pattern.startswith("^") and pattern.endswith("$"), "anchor filters: '1' matches '10'"


def test_mirrord_targets_exist_in_the_manifests():
    resources = manifests()
    for name, config in mirrord_configs().items():
        target = config["target"]
        kind, workload, _, container_name = target["path"].split("/")
        assert kind == "deployment"
        deployment = resources[("Deployment", workload)]
        assert target["namespace"] == deployment["metadata"]["namespace"], name
        assert container(deployment)["name"] == container_name, name


def test_split_queue_ids_and_env_var_match_the_cluster_resources():
    split_ids = set(mirrord_configs()["split"]["feature"]["split_queues"])
    [current] = load_yaml_docs(K8S / "mirrord" / "split-config.yaml")
    [legacy] = load_yaml_docs(K8S / "mirrord" / "queue-registry-legacy.yaml")
    consumer = manifests()[("Deployment", "sqs-consumer")]
    consumer_env = {e["name"]: e for e in container(consumer)["env"]}

    assert (current["apiVersion"], current["kind"]) == ("queues.mirrord.metalbear.co/v1", "MirrordSplitConfig")
    assert current["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sqs-consumer"}
    assert {q["id"] for q in current["spec"]["queues"]} == split_ids
    for queue in current["spec"]["queues"]:
        assert queue["kind"] == "sqs"
        for source in queue["appConfig"]["queue"]:
            assert source["env"] in consumer_env and source["containers"] == [container(consumer)["name"]]

    assert (legacy["apiVersion"], legacy["kind"]) == ("queues.mirrord.metalbear.co/v1alpha",
                                                      "MirrordWorkloadQueueRegistry")
    assert legacy["spec"]["consumer"] == {"name": "sqs-consumer", "workloadType": "Deployment",
                                          "container": container(consumer)["name"]}
    assert set(legacy["spec"]["queues"]) == split_ids
    for queue in legacy["spec"]["queues"].values():
        assert queue["queueType"] == "SQS" and queue["nameSource"]["envVar"] in consumer_env

    for doc in (current, legacy):
        assert doc["metadata"]["namespace"] == consumer["metadata"]["namespace"]
    # The operator can rewrite the variable only if it is a literal or comes from a ConfigMap.
    queue_var = consumer_env["QUEUE_NAME"]
    assert "value" in queue_var or "configMapKeyRef" in queue_var.get("valueFrom", {})
    # And the app really reads its queue from that variable.
    assert Settings.from_env({"QUEUE_NAME": "mirrord-tmp-1234"}).queue_name == "mirrord-tmp-1234"


def test_operator_values_enable_sqs_splitting_and_reach_localstack():
    values = yaml.safe_load((K8S / "mirrord" / "operator-values.yaml").read_text())
    assert values["operator"]["sqsSplitting"] is True
    endpoint = values["operator"]["extraEnv"]["AWS_ENDPOINT_URL"]
    service = manifests()[("Service", "localstack")]
    assert endpoint == (f"http://{service['metadata']['name']}.{service['metadata']['namespace']}"
                        f".svc.cluster.local:{service['spec']['ports'][0]['port']}")


def test_localstack_is_ready_by_the_same_check_in_compose_and_kubernetes():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    probe = container(manifests()[("Deployment", "localstack")])["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"] and probe[2] == compose["services"]["localstack"]["healthcheck"]["test"][1]
    mount = container(manifests()[("Deployment", "localstack")])["volumeMounts"][0]
    assert mount["mountPath"].endswith("/" + mount["subPath"]) and mount["subPath"] == "create-queues.py"


def test_localstack_image_is_pinned_to_the_same_tag_everywhere():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["localstack"]["image"] == "localstack/localstack:${LOCALSTACK_IMAGE_TAG:-4.14.0}"
    assert "LOCALSTACK_AUTH_TOKEN" in compose["services"]["localstack"]["environment"]
    assert container(manifests()[("Deployment", "localstack")])["image"] == LOCALSTACK_IMAGE
    assert "4.14.0" in (ROOT / "requirements-localstack.txt").read_text()  # what the tests run


def test_ports_probes_and_app_image_agree():
    resources = manifests()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    image_port = re.search(r"^EXPOSE (\d+)$", dockerfile, re.M).group(1)
    assert re.search(rf"PORT={image_port}\b", dockerfile)
    routes = {rule.rule for rule in create_app(Settings.from_env({"APP_MODE": "producer"}),
                                               start_consumer=False).url_map.iter_rules()}
    config = resources[("ConfigMap", "sqs-demo-config")]["data"]
    for role in ("producer", "consumer"):
        deployment = resources[("Deployment", f"sqs-{role}")]
        service = resources[("Service", f"sqs-{role}")]
        app = container(deployment)
        env = {e["name"]: e for e in app["env"]}
        assert env["APP_MODE"]["value"] == role
        assert str(app["ports"][0]["containerPort"]) == env["PORT"]["value"] == image_port
        assert service["spec"]["ports"][0]["targetPort"] == app["ports"][0]["name"]
        assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert app[probe]["httpGet"]["path"] in routes
        # A probe must never trip during a long poll, and shutdown must outlast poll + processing.
        liveness = app["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= int(config["WAIT_TIME_SECONDS"])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > int(config["WAIT_TIME_SECONDS"]) + int(config["VISIBILITY_TIMEOUT"])
        pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert app["securityContext"]["allowPrivilegeEscalation"] is False
        assert app["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"cpu", "memory"} <= set(app["resources"]["limits"]) and app["resources"]["requests"]
        assert app["image"] == compose["services"][role]["image"]
        compose_port = compose["services"][role]["ports"][0].rsplit(":", 1)[1]
        assert compose_port == image_port
        assert compose["services"][role]["environment"]["APP_MODE"] == role
        assert compose["services"][role]["depends_on"]["localstack"]["condition"] == "service_healthy"
    healthcheck_path = re.search(r"HEALTHCHECK.*?:%s(/\w+)", dockerfile, re.S).group(1)
    assert healthcheck_path in routes
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert "--omit=dev" in dockerfile and "requirements-dev" not in dockerfile


def test_queue_name_is_the_same_across_compose_kubernetes_and_the_app_default():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names = {compose["services"][s]["environment"]["QUEUE_NAME"] for s in ("localstack", "producer", "consumer")}
    names.add(manifests()[("ConfigMap", "sqs-demo-config")]["data"]["QUEUE_NAME"])
    names.add(Settings.from_env({}).queue_name)
    assert names == {"sample-queue"}


# ---------------------------------------------------------------------------- smoke: the commands as host processes


def dockerfile_env_and_cmd() -> tuple[dict[str, str], list[str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[4:]))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    return env, cmd


def healthcheck_cmd() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return json.loads(re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M).group(1))


class HostService:
    """One container's command and environment, run on this host: service names map to 127.0.0.1."""

    def __init__(self, env: dict[str, str], localstack_url: str):
        image_env, cmd = dockerfile_env_and_cmd()
        self.port = free_port()
        merged = {**image_env, **env}
        merged = {k: v.replace("http://localstack:4566", localstack_url) for k, v in merged.items()}
        merged.update(HOST="127.0.0.1", PORT=str(self.port))   # a free port instead of the container's 5000
        self.env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **merged}
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="host-service-", suffix=".log")[1])
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.proc.poll() is None and self.get("/healthz").status_code == 200, 30,
                   f"{cmd} to serve /healthz")

    def get(self, path):
        import requests

        return requests.get(self.base_url + path, timeout=5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float) -> tuple[int, str]:
        code = stop_process(self.proc, timeout=grace)
        output = self.logs()
        self.log_path.unlink()
        return code, output


def configmap_env(resources: dict, env_list: list[dict]) -> dict[str, str]:
    out = {}
    for entry in env_list:
        if "value" in entry:
            out[entry["name"]] = entry["value"]
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            out[entry["name"]] = resources[("ConfigMap", ref["name"])]["data"][ref["key"]]
        elif entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
            out[entry["name"]] = f"{entry['name'].lower()}-7f9c-test"
    return out


@pytest.fixture
def fresh_demo_queue(localstack_endpoint):
    """Run the LocalStack init hook the way LocalStack does (exec in its own Python), then empty the queue."""
    python = localstack_python()
    hook = K8S / "localstack-init" / "create-queues.py"
    result = subprocess.run([python, "-c", f"exec(open({str(hook)!r}).read(), {{}})"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "INIT_SQS_ENDPOINT": localstack_endpoint.url,
                                                        "QUEUE_NAME": "sample-queue"})
    assert result.returncode == 0, result.stderr
    client = localstack_endpoint.client
    url = client.get_queue_url(QueueName="sample-queue")["QueueUrl"]
    policy = json.loads(client.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
                        ["Attributes"]["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(":sample-queue-dlq") and int(policy["maxReceiveCount"]) == 5
    localstack_endpoint.drain(url, wait=0)  # not PurgeQueue: it may also drop messages sent just after it
    return localstack_endpoint


def check_flow(producer: HostService, consumer: HostService, consumer_name: str) -> Listener:
    """A message from the producer reaches a Socket.IO client of the consumer; the client stays
    connected (as a browser tab would) for the shutdown that follows."""
    import requests

    listener = Listener(consumer.base_url)
    assert producer.get("/status").json()["mode"] == "producer"
    sent = requests.post(producer.base_url + "/produce", timeout=10,
                         json={"message": "smoke", "attributes": {"user": "me"}, "count": 3}).json()
    try:
        events = listener.wait_messages(3, timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- consumer log:\n{consumer.logs()}\n--- producer log:\n{producer.logs()}")
    assert sorted(e["id"] for e in events) == sorted(sent["message_ids"])
    assert {e["consumer"] for e in events} == {consumer_name}
    assert all(e["attributes"]["user"]["value"] == "me" for e in events)
    return listener


def stop_with_a_browser_connected(service: HostService, listener: Listener, wait_time_seconds: int, grace: int):
    """SIGTERM while a browser-like client is connected: the consumer stops polling at once (within one
    long poll, not at the end of the grace period), and the process exits 0 within the grace period."""
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: any((s.get("stats") or {}).get("state") == "stopped" for s in listener.of("consumer_status"))
               or not listener.client.connected, wait_time_seconds + 10, "the consumer to stop")
    assert time.monotonic() - started < wait_time_seconds + 10
    code, output = service.stop(grace=grace)
    assert code == 0, output
    assert "consumer stopped" in output and "Traceback" not in output, output
    assert time.monotonic() - started < grace, output


@pytest.mark.parametrize("async_mode", ["threading", "eventlet"])
def test_compose_services_run_as_host_processes(fresh_demo_queue, async_mode):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    ls_env = compose["services"]["localstack"]["environment"]
    healthcheck = compose["services"]["localstack"]["healthcheck"]["test"][1]
    port = fresh_demo_queue.url.rsplit(":", 1)[1]
    check = subprocess.run(["sh", "-c", healthcheck.replace("localhost:4566", f"127.0.0.1:{port}")])
    assert check.returncode == 0 and ls_env["SERVICES"] == "sqs"

    services = {}
    try:
        for role in ("consumer", "producer"):
            env = {**compose["services"][role]["environment"], "ASYNC_MODE": async_mode}
            services[role] = HostService(env, fresh_demo_queue.url)
        listener = check_flow(services["producer"], services["consumer"], "compose-consumer")
        health = subprocess.run(healthcheck_cmd(), env=services["consumer"].env, timeout=10)
        assert health.returncode == 0   # the image's HEALTHCHECK command
        grace = int(compose["x-app"]["stop_grace_period"].rstrip("s"))
        stop_with_a_browser_connected(services.pop("consumer"), listener, 20, grace)
    finally:
        for service in services.values():
            code, output = service.stop(grace=40)
            assert code == 0, output


def test_kubernetes_deployments_run_as_host_processes(fresh_demo_queue):
    resources = manifests()
    config = resources[("ConfigMap", "sqs-demo-config")]["data"]
    grace = resources[("Deployment", "sqs-consumer")]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    services = {}
    try:
        for role in ("consumer", "producer"):
            deployment = resources[("Deployment", f"sqs-{role}")]
            spec = container(deployment)
            assert "command" not in spec and "args" not in spec   # the image's CMD runs
            services[role] = HostService(configmap_env(resources, spec["env"]), fresh_demo_queue.url)
            for probe in ("livenessProbe", "readinessProbe"):
                path = spec[probe]["httpGet"]["path"]
                wait_until(lambda: services[role].get(path).status_code == 200, 20, f"{role} {path}")
        listener = check_flow(services["producer"], services["consumer"], "pod_name-7f9c-test")
        stop_with_a_browser_connected(services.pop("consumer"), listener, int(config["WAIT_TIME_SECONDS"]), grace)
    finally:
        for service in services.values():
            code, output = service.stop(grace=grace)
            assert code == 0, output
