"""delivery: Relay end to end: Cloud Scheduler / Cloud Tasks call the relay, the relay calls
the target as the object's identity and records each run exactly as it happened.

The operator runs with its relay on a loopback port; the emulator reaches it through its
host map as `https://relay.gcpcall.test/...`, with an ID token it mints for the object's
Google service account (the metadata server's account: Operator identity mode). The
relay's own calls go to the recording target and to the emulator's Compute stand-in.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s_client
from tests.integration.conftest import (
    PROJECT,
    TARGET_HOST,
    Emulator,
    Objects,
    Operator,
    Target,
    condition,
    operator_env,
    wait_for,
)
from tests.integration.test_gcptask_lifecycle import make_queue, wait_phase
from tests.integration.test_gcptask_lifecycle import sample as task_sample
from tests.integration.test_scheduled_lifecycle import ready, sample

if TYPE_CHECKING:
    from tests.conftest import ControlPlane

RELAY_HOST = "relay.gcpcall.test"
RELAY_URL = f"https://{RELAY_HOST}/relay/v1"
OPERATOR_GSA = "operator@test-project.iam.gserviceaccount.com"
RUNNER = "runner@test-project.iam.gserviceaccount.com"
RUN_NOW = "gcpcall.dev/run-requested-at"
INTRUDER = "intruder@other.iam.gserviceaccount.com"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RelayWorld:
    emulator: Emulator
    target: Target
    namespace: str
    port: int
    operator: Operator

    def post(self, body: bytes, token: str | None) -> tuple[int, dict[str, Any]]:
        """A request to the relay straight from the test (not through Google)."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/relay/v1", data=body,
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def _get(self, path: str) -> bytes:
        req = urllib.request.Request(f"{self.emulator.http_url}{path}",
                                     headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return bytes(resp.read())

    def id_token(self, email: str, audience: str = RELAY_URL) -> str:
        """An ID token Google mints for `email`: the metadata server's for the operator's own
        account, IAM Credentials' generateIdToken (as that account) for any other."""
        base = "/computeMetadata/v1/instance/service-accounts/default"
        if email == OPERATOR_GSA:
            return self._get(f"{base}/identity?audience={audience}").decode()
        access = json.loads(self._get(f"{base}/token"))["access_token"]
        req = urllib.request.Request(
            f"{self.emulator.http_url}/v1/projects/-/serviceAccounts/{email}:generateIdToken",
            data=json.dumps({"audience": audience, "includeEmail": True}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {access}"},
            method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(json.loads(resp.read())["token"])


@pytest.fixture(scope="module")
def relay(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, target: Target,
    k8s: k8s_client.ApiClient, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RelayWorld]:
    operator.stop()
    namespace = f"relay-{uuid.uuid4().hex[:6]}"
    k8s_client.CoreV1Api(k8s).create_namespace(
        k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=namespace)))
    port = _free_port()
    emulator.admin("PUT", "/hostmap", {"host": RELAY_HOST,
                                       "base_url": f"http://127.0.0.1:{port}"})
    emulator.admin("PUT", "/metadata", {"email": OPERATOR_GSA, "projectId": PROJECT})
    # the objects act as the operator's account and call as RUNNER (target.auth), which
    # that account may impersonate, as Direct delivery's Cloud Scheduler would
    for account in (RUNNER, INTRUDER):  # INTRUDER: so the test can mint its forged tokens
        emulator.admin("POST", "/iam/policy:grant", {
            "member": f"serviceAccount:{OPERATOR_GSA}", "serviceAccount": account})
    googleapis = f"{emulator.http_url}/googleapis"
    env = operator_env(
        controlplane, emulator,
        GCPCALL_RELAY_URL=RELAY_URL, GCPCALL_RELAY_PORT=str(port),
        GCPCALL_RELAY_ADDRESS="127.0.0.1",
        GCE_METADATA_HOST=emulator.http_url.removeprefix("http://"),
        GCPCALL_IAM_CREDENTIALS_ENDPOINT=emulator.http_url,
        GCPCALL_HOST_MAP=",".join([f"{TARGET_HOST}=http://127.0.0.1:{target.port}"] + [
            f"{host}={googleapis}/{host}" for host in (
                "compute.googleapis.com", "cloudbuild.googleapis.com",
                "dataflow.googleapis.com")]),
    )
    mine = Operator(env, tmp_path_factory.mktemp("relay") / "operator.log",
                    args=("--namespace", namespace))
    mine.start()
    try:
        yield RelayWorld(emulator, target, namespace, port, mine)
    finally:
        mine.stop()
        operator.start()


def relayed(name: str, path: str, **spec: Any) -> dict[str, Any]:
    body = sample(name, **spec)
    body["spec"]["delivery"] = "Relay"
    body["spec"]["schedule"] = "0 0 1 1 *"
    body["spec"]["target"]["uri"] = f"https://{TARGET_HOST}{path}"
    return body


def run_now(sgc: Objects, namespace: str, name: str, value: str) -> None:
    sgc.patch(namespace, name, {"metadata": {"annotations": {RUN_NOW: value}}})


def last_run(sgc: Objects, namespace: str, name: str, what: str,
             check: Any = lambda r: True) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run = ((sgc.get(namespace, name) or {}).get("status") or {}).get("lastRun")
        return run if run and check(run) else None

    return dict(wait_for(probe, timeout=60, what=f"{name}: {what}"))


def test_a_relayed_run_is_the_spec_s_call_as_the_object_and_records_the_response(
    relay: RelayWorld, sgc: Objects
) -> None:
    ns, path = relay.namespace, f"/relay/{relay.namespace}/ok"
    sgc.create(ns, relayed("ok", path))
    obj = ready(sgc, ns, "ok")
    job = relay.emulator.scheduler().get_job(name=obj["status"]["jobName"])
    assert job.http_target.uri == RELAY_URL  # Google calls the relay, not the target
    assert job.http_target.oidc_token.service_account_email == OPERATOR_GSA
    assert job.http_target.oidc_token.audience == RELAY_URL
    envelope = json.loads(job.http_target.body)
    assert envelope == {"apiVersion": "gcpcall.dev/v1alpha1", "kind": "ScheduledGcpCall",
                        "namespace": ns, "name": "ok", "uid": obj["metadata"]["uid"]}

    run_now(sgc, ns, "ok", "first")
    run = last_run(sgc, ns, "ok", "a run recorded")
    assert (run["result"], run["httpStatus"], run["code"], run["attempts"]) == (
        "Succeeded", 200, 0, 1)
    assert json.loads(run["response"]) == {"ok": True}
    assert run["id"]
    got = relay.target.received(path)
    assert len(got) == 1
    assert got[0].body == b'{"size":4}'  # the spec's body, not the envelope
    assert got[0].headers["Authorization"].startswith("Bearer ya29.")  # OAuth, as the spec asks
    final = sgc.get(ns, "ok") or {}
    assert condition(final, "LastRunSucceeded")["status"] == "True"


def test_a_refused_call_is_one_run_whose_retries_are_its_attempts(
    relay: RelayWorld, sgc: Objects
) -> None:
    ns, path = relay.namespace, f"/relay/{relay.namespace}/denied"
    relay.target.answer(path, 403, 403, 403)
    body = relayed("denied", path)
    body["spec"]["retry"] = {"retryCount": 2, "minBackoffSeconds": 1, "maxBackoffSeconds": 1}
    sgc.create(ns, body)
    ready(sgc, ns, "denied")
    run_now(sgc, ns, "denied", "first")
    run = last_run(sgc, ns, "denied", "three attempts", lambda r: r.get("attempts") == 3)
    assert (run["result"], run["httpStatus"], run["code"]) == ("Failed", 403, 7)
    assert "HTTP 403 PERMISSION_DENIED" in run["message"]
    obj = sgc.get(ns, "denied") or {}
    assert len(obj["status"]["runs"]) == 1  # one execution, one run
    lrs = condition(obj, "LastRunSucceeded")
    assert (lrs["status"], lrs["reason"]) == ("False", "TargetError")
    assert len(relay.target.received(path)) == 3


def test_a_google_error_reads_as_google_wrote_it(relay: RelayWorld, sgc: Objects) -> None:
    """The Compute stand-in answers 404 for a MIG that does not exist, as Compute does."""
    ns = relay.namespace
    body = sample("no-mig")
    body["spec"].update(delivery="Relay", schedule="0 0 1 1 *", retry={"retryCount": 0})
    body["spec"]["target"]["uri"] = ("https://compute.googleapis.com/compute/v1/projects/p/"
                                     "zones/europe-west1-b/instanceGroupManagers/none/resize"
                                     "?size=2")
    del body["spec"]["target"]["body"]
    sgc.create(ns, body)
    ready(sgc, ns, "no-mig")
    run_now(sgc, ns, "no-mig", "first")
    run = last_run(sgc, ns, "no-mig", "the 404 recorded")
    assert (run["result"], run["httpStatus"], run["code"]) == ("Failed", 404, 5)
    assert "from compute.googleapis.com" in run["message"]
    assert "not found" in run["message"].lower()


@pytest.mark.parametrize("history", [10, 0], ids=["history-10", "history-0"])
def test_a_lost_answer_is_retried_without_a_second_call(
    relay: RelayWorld, sgc: Objects, history: int
) -> None:
    """historyLimit 0 keeps no `runs` list, and the run is still found by its retry."""
    name = f"once-{history}"
    ns, path = relay.namespace, f"/relay/{relay.namespace}/{name}"
    body = relayed(name, path)
    body["spec"]["retry"] = {"retryCount": 2, "minBackoffSeconds": 1, "maxBackoffSeconds": 1}
    body["spec"]["historyLimit"] = history
    sgc.create(ns, body)
    ready(sgc, ns, name)
    relay.emulator.admin("POST", "/dispatch/drop-responses", {"count": 1, "host": RELAY_HOST})
    try:
        run_now(sgc, ns, name, "first")
        wait_for(lambda: relay.emulator.admin("GET", "/dispatch/drop-responses")["dropped"]
                 and len([a for a in relay.emulator.admin(
                     "GET", f"/scheduler/attempts?job={ready(sgc, ns, name)['status']['jobName']}"
                 )["attempts"]]) >= 2, timeout=30, what="the retry after the lost answer")
    finally:
        relay.emulator.admin("DELETE", "/dispatch/drop-responses")
    run = last_run(sgc, ns, name, "the run", lambda r: r["result"] == "Succeeded")
    assert run["attempts"] == 1  # the retry was answered from status, without a call
    assert len(relay.target.received(path)) == 1
    if history == 0:
        assert "runs" not in (sgc.get(ns, name) or {})["status"]


def test_a_relayed_task_ends_succeeded_or_failed_never_unknown(
    relay: RelayWorld, gtask: Objects
) -> None:
    ns = relay.namespace
    make_queue(relay.emulator, f"{ns}-ok")
    good = task_sample("good", f"{ns}-ok", f"/relay/{ns}/task-good", delivery="Relay")
    gtask.create(ns, good)
    obj = wait_phase(gtask, ns, "good", "Succeeded", timeout=60)
    succeeded = condition(obj, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("True", "Succeeded")
    assert obj["status"]["lastAttempt"]["httpStatus"] == 200
    assert len(relay.target.received(f"/relay/{ns}/task-good")) == 1

    make_queue(relay.emulator, f"{ns}-bad", max_attempts=2)
    relay.target.answer(f"/relay/{ns}/task-bad", 503, 503, 503)
    gtask.create(ns, task_sample("bad", f"{ns}-bad", f"/relay/{ns}/task-bad",
                                 delivery="Relay"))
    obj = wait_phase(gtask, ns, "bad", "Failed", timeout=60)
    failed = condition(obj, "Succeeded")
    assert (failed["status"], failed["reason"]) == ("False", "TargetError")
    assert obj["status"]["lastAttempt"]["httpStatus"] == 503
    assert len(relay.target.received(f"/relay/{ns}/task-bad")) == 2


def test_only_the_object_s_own_identity_gets_a_call(relay: RelayWorld, sgc: Objects) -> None:
    ns, path = relay.namespace, f"/relay/{relay.namespace}/guarded"
    sgc.create(ns, relayed("guarded", path))
    obj = ready(sgc, ns, "guarded")
    envelope = json.dumps({"apiVersion": "gcpcall.dev/v1alpha1", "kind": "ScheduledGcpCall",
                           "namespace": ns, "name": "guarded",
                           "uid": obj["metadata"]["uid"]}).encode()
    refusals = {
        "no token": relay.post(envelope, None),
        "not a JWT": relay.post(envelope, "not-a-token"),
        "another audience": relay.post(envelope, relay.id_token(OPERATOR_GSA, "https://x.test/")),
        "another account": relay.post(envelope, relay.id_token(INTRUDER)),
        "another uid": relay.post(envelope.replace(obj["metadata"]["uid"].encode(),
                                                   str(uuid.uuid4()).encode()),
                                  relay.id_token(OPERATOR_GSA)),
        "a foreign body": relay.post(b'{"uri": "https://evil.example/"}',
                                     relay.id_token(OPERATOR_GSA)),
    }
    assert {k: v[0] for k, v in refusals.items()} == {
        "no token": 401, "not a JWT": 401, "another audience": 401, "another account": 403,
        "another uid": 403, "a foreign body": 403}
    assert relay.target.received(path) == []  # nothing was called
    assert not (sgc.get(ns, "guarded") or {})["status"].get("runs")  # nothing was written
    # and the genuine caller is served
    status, answer = relay.post(envelope, relay.id_token(OPERATOR_GSA))
    assert (status, answer) == (200, {"httpStatus": 200})
    assert len(relay.target.received(path)) == 1


def test_a_call_in_flight_when_the_operator_dies_is_one_run_after_the_restart(
    relay: RelayWorld, sgc: Objects
) -> None:
    """SIGKILL while the relay waits for a slow target: Cloud Scheduler's retry reaches the
    restarted relay, which calls again (the first answer was never seen) and records the
    execution as one run."""
    ns, path = relay.namespace, f"/relay/{relay.namespace}/slow"
    relay.target.delay(path, 3.0)
    body = relayed("slow", path)
    body["spec"]["retry"] = {"retryCount": 3, "minBackoffSeconds": 2, "maxBackoffSeconds": 2}
    sgc.create(ns, body)
    ready(sgc, ns, "slow")
    run_now(sgc, ns, "slow", "first")
    wait_for(lambda: relay.target.received(path), timeout=30, what="the first call under way")
    relay.operator.kill()
    relay.target.delay(path, 0.0)
    relay.operator.start()
    run = last_run(sgc, ns, "slow", "the run", lambda r: r["result"] == "Succeeded")
    obj = sgc.get(ns, "slow") or {}
    assert len(obj["status"]["runs"]) == 1
    assert run["attempts"] == 1  # the attempt the dead process made left no record
    assert len(relay.target.received(path)) == 2
