"""Pure unit tests of the control plane: CRD generation, builders, phase machine, settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ingest_operator import builders, crdgen
from ingest_operator.config import OperatorConfig, OperatorConfigError, load_config
from ingest_operator.guard import check_worker
from ingest_operator.phases import (
    Action,
    JobObservation,
    JobState,
    OomKill,
    decide,
    find_oom_kill,
    is_suspended,
    job_patch,
    observe_job,
    refused_patch,
    restart_requested,
    should_read_pods,
    should_stop_job,
    start_run_patch,
    suspend_patch,
)

from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.api.status import CsvIngestionStatus, Phase
from ingest_worker.exitcodes import WORKER_EXIT_FATAL

ROOT = Path(__file__).resolve().parents[2]
NOW = "2025-01-01T00:00:00Z"


def spec(**overrides: Any) -> CsvIngestionSpec:
    wire: dict[str, Any] = {
        "source": {"url": "file:///data/a.csv"},
        "kafka": {"bootstrapServers": "k:9092", "topic": "rows"},
    }
    wire.update(overrides)
    return CsvIngestionSpec.model_validate(wire)


def status(**fields: Any) -> CsvIngestionStatus:
    return CsvIngestionStatus.model_validate(fields)


# --- CRD ---------------------------------------------------------------------------------------


def test_committed_crd_is_current() -> None:
    assert crdgen.main(["--check", str(ROOT / "crds" / "csvingestion.yaml")]) == 0, (
        "crds/csvingestion.yaml is stale: python -m ingest_operator.crdgen > crds/csvingestion.yaml"
    )


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        out += _walk(child, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out += _walk(node[key], f"{path}[{key}]")
    return out


def test_crd_schema_is_structural_and_documented() -> None:
    crd = crdgen.build_crd()
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        # A node without a type keeps any value (structural schemas allow it): only the
        # columnTypes entries, a type name or an object, which the operator validates.
        assert "type" in node or (path == "spec.format.columnTypes[additionalProperties]"
                                  and node["x-kubernetes-preserve-unknown-fields"]), path
        assert "description" in node or "[" in path, f"{path} has no description"
        assert not {"$ref", "anyOf", "allOf", "title"} & node.keys(), path
        assert not ("properties" in node and "additionalProperties" in node), path
    spec_props = schema["properties"]["spec"]["properties"]
    assert schema["properties"]["spec"]["required"] == ["source", "kafka"]
    assert spec_props["kafka"]["required"] == ["bootstrapServers", "topic"]
    assert spec_props["source"]["properties"]["compression"]["enum"][0] == "auto"
    assert spec_props["checkpoint"]["properties"]["everySeconds"]["minimum"] == 1
    assert spec_props["checkpoint"]["default"] == {}
    assert "pattern" in spec_props["kafka"]["properties"]["topic"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Rows"] == ".status.rowsPublished"
    assert columns["Errors"] == ".status.rowsFailed"
    wide = {c["name"]: c for c in version["additionalPrinterColumns"] if c.get("priority") == 1}
    assert wide["Rate"]["jsonPath"] == ".status.rowsPerSecond"
    assert wide["Rate"]["type"] == "number"
    assert wide["ETA"]["jsonPath"] == ".status.eta" and wide["ETA"]["type"] == "string"
    status_props = schema["properties"]["status"]["properties"]
    assert {"byteOffset", "row"} <= status_props["checkpoint"]["properties"].keys()
    assert status_props["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


# --- builders ----------------------------------------------------------------------------------


def test_job_names_are_deterministic_and_bounded() -> None:
    assert builders.job_name("sales", 1) == "sales-1"
    long = "x" * 250
    assert builders.job_name(long, 12) == builders.job_name(long, 12)
    assert len(builders.job_name(long, 12)) <= 63
    assert builders.job_name(long, 12).endswith("-12")
    assert builders.job_name(long, 1) != builders.job_name(long + "y", 1)


def test_job_is_restricted_and_carries_the_spec() -> None:
    s = spec(
        source={"url": "s3://b/k.csv", "secretRef": {"name": "aws"}},
        kafka={"bootstrapServers": "k:9092", "topic": "rows", "secretRef": {"name": "sasl"}},
        worker={"backoffLimit": 2},
    )
    job = builders.build_job("sales", "ns", s, run=3, generation=5, default_image="img:1")
    assert job["metadata"]["name"] == "sales-3"
    assert job["metadata"]["labels"][builders.LABEL_RUN] == "3"
    jspec = job["spec"]
    assert jspec["backoffLimit"] == 2
    fatal = jspec["podFailurePolicy"]["rules"][0]
    assert fatal["action"] == "FailJob"
    assert fatal["onExitCodes"]["values"] == [WORKER_EXIT_FATAL]
    pod = jspec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "sales-worker"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert c["image"] == "img:1"
    assert c["command"][:3] == ["python", "-m", "ingest_worker.job_main"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CSVKAFKA_INGESTION_NAME"] == "sales"
    assert env["CSVKAFKA_RUN"] == "3"
    assert CsvIngestionSpec.model_validate_json(env["CSVKAFKA_SPEC"] or "") == s
    assert c["envFrom"] == [{"secretRef": {"name": "aws"}}]
    assert any(v.get("secret", {}).get("secretName") == "sasl" for v in pod["volumes"])


def test_role_allows_only_own_resource() -> None:
    role = builders.build_role("sales", "ns")
    for rule in role["rules"]:
        assert rule["resourceNames"] == ["sales"]
        assert "list" not in rule["verbs"] and "delete" not in rule["verbs"]
    status_rule = next(r for r in role["rules"] if r["resources"] == ["csvingestions/status"])
    assert set(status_rule["verbs"]) == {"get", "patch", "update"}
    binding = builders.build_role_binding("sales", "ns", "sales-worker")
    assert binding["subjects"][0]["name"] == "sales-worker"


def test_custom_service_account_is_used() -> None:
    s = spec(worker={"serviceAccountName": "wi"})
    job = builders.build_job("a", "ns", s, run=1, generation=1, default_image="i")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "wi"


# --- phase machine -----------------------------------------------------------------------------


def test_first_reconcile_starts_run_one() -> None:
    d = decide(1, spec(), status())
    assert (d.action, d.run, d.reset_checkpoint) == (Action.START_RUN, 1, False)


def test_restart_of_the_operator_only_ensures_the_job() -> None:
    st = status(phase="InProgress", run=1, observedGeneration=1, sourceUrl="file:///data/a.csv")
    assert decide(1, spec(), st).action == Action.ENSURE_JOB


def test_edit_while_running_is_reported_not_applied() -> None:
    st = status(phase="InProgress", run=1, observedGeneration=1)
    assert decide(2, spec(), st).action == Action.REPORT_PENDING_EDIT


def test_edit_of_a_failed_ingestion_retries_from_the_checkpoint() -> None:
    st = status(
        phase="Failed",
        run=1,
        observedGeneration=1,
        sourceUrl="file:///data/a.csv",
        checkpoint={"byteOffset": 100, "row": 5},
    )
    assert decide(1, spec(), st).action == Action.NOTHING
    d = decide(2, spec(retry=1), st)
    assert (d.action, d.run, d.reset_checkpoint) == (Action.START_RUN, 2, False)
    patch = start_run_patch(
        st, spec(), run=2, job_name="a-2", generation=2, reset_checkpoint=False, now=NOW
    )
    assert "checkpoint" not in patch and patch["run"] == 2 and patch["phase"] == "Pending"
    assert "row 5" in patch["message"]


def test_a_new_source_starts_from_zero() -> None:
    st = status(
        phase="Failed",
        run=1,
        observedGeneration=1,
        sourceUrl="file:///data/old.csv",
        checkpoint={"byteOffset": 100, "row": 5},
        rowsPublished=5,
    )
    d = decide(2, spec(), st)
    assert d.reset_checkpoint
    patch = start_run_patch(
        st, spec(), run=2, job_name="a-2", generation=2, reset_checkpoint=True, now=NOW
    )
    assert patch["checkpoint"] is None and patch["rowsPublished"] == 0
    assert patch["sourceUrl"] == "file:///data/a.csv"


def test_suspend_and_resume() -> None:
    running = status(phase="InProgress", run=1, observedGeneration=1, jobName="a-1")
    assert decide(2, spec(suspend=True), running).action == Action.SUSPEND
    suspended = running.model_copy(
        update=CsvIngestionStatus.model_validate(
            {**running.to_wire(), **suspend_patch(running, 2, NOW)}
        ).__dict__
    )
    assert is_suspended(suspended) and suspended.phase == Phase.PENDING
    assert decide(2, spec(suspend=True), suspended).action == Action.NOTHING
    d = decide(3, spec(suspend=False), suspended)
    assert (d.action, d.run) == (Action.START_RUN, 2)
    # A stale event of the deleted Job does not move the phase.
    assert job_patch(suspended, 1, "a-1", JobObservation(JobState.FAILED), NOW) is None


def test_completed_is_terminal() -> None:
    st = status(phase="Completed", run=1, observedGeneration=1)
    assert decide(1, spec(), st).action == Action.NOTHING
    assert decide(2, spec(retry=3), st).action == Action.IGNORE_EDIT


def test_job_states_move_the_phase() -> None:
    assert observe_job(None).state == JobState.PENDING
    assert observe_job({"active": 1}).state == JobState.RUNNING
    done = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert observe_job(done).state == JobState.SUCCEEDED
    failed = observe_job(
        {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        }
    )
    assert failed.state == JobState.FAILED

    pending = status(phase="Pending", run=2, observedGeneration=3, rowsPublished=0)
    running = job_patch(pending, 2, "a-2", JobObservation(JobState.RUNNING), NOW)
    assert running is not None and running["phase"] == "InProgress"
    assert job_patch(pending, 1, "a-1", JobObservation(JobState.RUNNING), NOW) is None  # stale

    inprog = status(phase="InProgress", run=2, observedGeneration=3, rowsPublished=7)
    ok = job_patch(inprog, 2, "a-2", JobObservation(JobState.SUCCEEDED), NOW)
    assert ok is not None and ok["phase"] == "Completed" and "7 rows" in ok["message"]
    ready = next(c for c in ok["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 3

    bad = job_patch(inprog, 2, "a-2", failed, NOW)
    assert bad is not None and bad["phase"] == "Failed" and "BackoffLimitExceeded" in bad["message"]
    worker_said = status(phase="InProgress", run=2, lastError="source not found: s3://b/k")
    bad = job_patch(worker_said, 2, "a-2", failed, NOW)
    assert bad is not None and "source not found: s3://b/k" in bad["message"]


def test_a_raised_restart_starts_from_the_beginning_even_from_completed() -> None:
    counters = {"rowsRead": 5, "rowsPublished": 5, "bytesRead": 100, "bytesTotal": 100}
    done = status(phase="Completed", run=1, observedGeneration=1, attempts=1, **counters)
    assert restart_requested(spec(restart=1), done) and not restart_requested(spec(), done)
    d = decide(2, spec(restart=1), done)
    assert (d.action, d.run, d.reset_checkpoint) == (Action.START_RUN, 2, True)
    patch = start_run_patch(
        done, spec(restart=1), run=2, job_name="a-2", generation=2, reset_checkpoint=True, now=NOW
    )
    assert patch["checkpoint"] is None and patch["rowsPublished"] == 0 and patch["bytesRead"] == 0
    assert patch["bytesTotal"] is None and patch["phase"] == "Pending" and patch["run"] == 2
    assert patch["observedRestart"] == 1 and "attempts" not in patch
    assert "restart requested" in patch["message"] and "from the beginning" in patch["message"]
    # Once started, the same value acts no more: the next run completes and stays Completed.
    restarted = CsvIngestionStatus.model_validate({**done.to_wire(), **patch})
    assert not restart_requested(spec(restart=1), restarted)
    again = restarted.model_copy(update={"phase": Phase.COMPLETED})
    assert decide(2, spec(restart=1), again).action == Action.NOTHING
    assert decide(3, spec(restart=1, retry=1), again).action == Action.IGNORE_EDIT
    # Lowered (a GitOps revert): nothing restarts.
    assert decide(3, spec(restart=0), again).action == Action.IGNORE_EDIT


def test_a_restart_raised_while_running_or_failed_discards_the_checkpoint() -> None:
    running = status(phase="InProgress", run=1, observedGeneration=1)
    # While a run goes, it is an edit for the next run; a Failed run restarts from zero.
    assert decide(2, spec(restart=1), running).action == Action.REPORT_PENDING_EDIT
    failed = running.model_copy(update={"phase": Phase.FAILED})
    d = decide(2, spec(restart=1), failed)
    assert (d.action, d.run, d.reset_checkpoint) == (Action.START_RUN, 2, True)
    # A plain retry still resumes.
    assert not decide(2, spec(retry=1), failed).reset_checkpoint
    # Suspended: the restart waits for the resume.
    done = status(phase="Completed", run=1, observedGeneration=1)
    assert decide(2, spec(restart=1, suspend=True), done).action == Action.IGNORE_EDIT
    # Created with restart already set: run 1 records it, and it does not act again.
    first = start_run_patch(
        status(),
        spec(restart=4),
        run=1,
        job_name="a-1",
        generation=1,
        reset_checkpoint=False,
        now=NOW,
    )
    assert first["observedRestart"] == 4 and first["message"].startswith("Run 1:")


def test_the_rate_goes_when_the_run_ends() -> None:
    running = status(phase="InProgress", run=1, rowsPerSecond=1200.5, eta="4m10s")
    for obs in (JobObservation(JobState.SUCCEEDED), JobObservation(JobState.FAILED, "X")):
        patch = job_patch(running, 1, "a-1", obs, NOW)
        assert patch is not None and patch["rowsPerSecond"] is None and patch["eta"] is None
    assert suspend_patch(running, 2, NOW)["eta"] is None


# --- out-of-memory kills ------------------------------------------------------------------------

RUNNING_JOB = {"active": 1, "failed": 1}
BACKOFF_EXCEEDED = {
    "failed": 7,
    "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
}


def pod(
    name: str,
    terminated: dict[str, Any] | None = None,
    *,
    last: dict[str, Any] | None = None,
    container: str = builders.WORKER_CONTAINER,
    limits: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A worker pod as the API returns it; ``terminated`` is its container's end."""
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": container, "resources": {"limits": limits or {}}}]},
        "status": {
            "containerStatuses": [
                {
                    "name": container,
                    "state": {"terminated": terminated} if terminated else {"running": {}},
                    "lastState": {"terminated": last} if last else {},
                }
            ]
        },
    }


OOM = {"exitCode": 137, "reason": "OOMKilled"}
SIGKILL = {"exitCode": 137, "reason": "Error"}  # what `kill -9` or a node's end leaves
W = builders.WORKER_CONTAINER


def test_pods_are_read_only_once_one_failed_and_the_job_did_not_complete() -> None:
    assert not should_read_pods(None)
    assert not should_read_pods({"active": 1})
    assert should_read_pods(RUNNING_JOB)
    assert should_read_pods({"active": 1, "uncountedTerminatedPods": {"failed": ["uid"]}})
    assert should_read_pods(BACKOFF_EXCEEDED)
    done = {"failed": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    assert not should_read_pods(done)


def test_an_oom_kill_is_told_from_any_other_sigkill_by_its_reason() -> None:
    limits = {"memory": "512Mi"}
    assert find_oom_kill([], W) is None
    assert find_oom_kill([pod("a-1-x", SIGKILL, limits=limits)], W) is None
    assert find_oom_kill([pod("a-1-x", {"exitCode": 1, "reason": "Error"})], W) is None
    found = find_oom_kill([pod("a-1-x", SIGKILL), pod("a-1-y", OOM, limits=limits)], W)
    assert found == OomKill(pod="a-1-y", memory_limit="512Mi")
    # A container restarted in place keeps its OOM kill in lastState.
    assert find_oom_kill([pod("a-1-z", last=OOM, limits=limits)], W) == OomKill("a-1-z", "512Mi")
    # Another container's limit is not spec.worker.resources': a sidecar's OOM stays retriable.
    assert find_oom_kill([pod("a-1-x", OOM, container="istio-proxy")], W) is None
    assert find_oom_kill([pod("a-1-x", OOM)], W) == OomKill("a-1-x", None)


def test_a_plain_sigkill_stays_retriable() -> None:
    obs = observe_job(RUNNING_JOB, find_oom_kill([pod("a-1-x", SIGKILL)], W))
    assert obs.state == JobState.RUNNING and obs.oom is None
    inprog = status(phase="InProgress", run=1, observedGeneration=1)
    assert job_patch(inprog, 1, "a-1", obs, NOW) is None


def test_an_oom_kill_fails_the_run_at_once_and_stops_the_job() -> None:
    oom = find_oom_kill([pod("a-2-x", OOM, limits={"memory": "512Mi"})], W)
    obs = observe_job(RUNNING_JOB, oom)
    assert (obs.state, obs.reason, obs.job_unfinished) == (JobState.FAILED, "OOMKilled", True)
    # An earlier pod's lastError does not hide it.
    inprog = status(phase="InProgress", run=2, observedGeneration=3, lastError="Kafka slow")
    patch = job_patch(inprog, 2, "a-2", obs, NOW)
    assert patch is not None and patch["phase"] == "Failed"
    message = patch["message"]
    assert message.startswith("Run 2 failed: worker pod a-2-x ran out of memory")
    assert "512Mi" in message and "raise spec.worker.resources.limits.memory" in message
    failed = next(c for c in patch["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "OOMKilled")
    # The Job's retries are stopped once the status says Failed, also on a later event.
    written = CsvIngestionStatus.model_validate({**inprog.to_wire(), **patch})
    assert should_stop_job(written, 2, obs)
    # The killed pod wrote no history: the operator records its attempt.
    (record,) = patch["history"]
    assert (record["attempt"], record["run"], record["outcome"]) == (1, 2, "OOMKilled")
    assert "512Mi" in record["message"]
    assert job_patch(written, 2, "a-2", obs, NOW) is None
    assert not should_stop_job(inprog, 2, obs)  # not before the status is written
    assert not should_stop_job(written, 1, obs)  # another run's Job
    next_run = status(phase="Pending", run=3, observedGeneration=4)
    assert not should_stop_job(next_run, 2, obs)


def test_an_oom_kill_on_the_last_retry_names_it_and_a_later_success_wins() -> None:
    oom = OomKill("a-1-x", "1Gi")
    obs = observe_job(BACKOFF_EXCEEDED, oom)
    assert obs.state == JobState.FAILED and obs.oom == oom and not obs.job_unfinished
    patch = job_patch(status(phase="InProgress", run=1), 1, "a-1", obs, NOW)
    assert patch is not None and "1Gi" in patch["message"]
    assert "BackoffLimitExceeded" not in patch["message"]
    done = {"failed": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    assert observe_job(done, oom) == JobObservation(JobState.SUCCEEDED)


def test_an_oom_kill_without_a_limit_says_which_fields_to_set() -> None:
    message = OomKill("a-1-x", None).message()
    assert "no memory limit" in message
    assert "spec.worker.resources.limits.memory" in message and "requests.memory" in message


# --- settings ----------------------------------------------------------------------------------


def test_config_defaults_and_parsing() -> None:
    cfg = load_config({})
    assert cfg.clusterwide and cfg.metrics_port == 9090
    cfg = load_config({"CSVKAFKA_WATCH_NAMESPACES": "a, b", "CSVKAFKA_METRICS_PORT": "0"})
    assert cfg.watch_namespaces == ("a", "b") and not cfg.clusterwide and cfg.metrics_port == 0
    assert load_config({"CSVKAFKA_WATCH_NAMESPACES": "*"}).clusterwide


def test_config_errors_name_every_bad_variable() -> None:
    with pytest.raises(OperatorConfigError) as err:
        load_config({"CSVKAFKA_METRICS_PORT": "http", "CSVKAFKA_WATCH_NAMESPACES": "Bad_NS"})
    text = str(err.value)
    assert "CSVKAFKA_METRICS_PORT" in text and "CSVKAFKA_WATCH_NAMESPACES" in text


def test_config_of_the_worker_guard() -> None:
    cfg = load_config({"CSVKAFKA_WORKER_IMAGE": "reg.example:5000/csv-kafka:1"})
    assert cfg.allowed_worker_images == () and not cfg.allow_service_account_override
    assert cfg.worker_images == {"reg.example:5000/csv-kafka:1"}  # the default: its own only
    cfg = load_config({
        "CSVKAFKA_ALLOWED_WORKER_IMAGES": " a:1, reg/b@sha256:0123abcd ,",
        "CSVKAFKA_ALLOW_SERVICE_ACCOUNT_OVERRIDE": "true",
    })
    assert cfg.allowed_worker_images == ("a:1", "reg/b@sha256:0123abcd")
    assert cfg.worker_images == {"csv-kafka:0.1.0", "a:1", "reg/b@sha256:0123abcd"}
    assert cfg.allow_service_account_override
    assert load_config({"CSVKAFKA_ALLOWED_WORKER_IMAGES": "*"}).allowed_worker_images == ("*",)


def test_config_errors_name_both_guard_variables() -> None:
    with pytest.raises(OperatorConfigError) as err:
        load_config({
            "CSVKAFKA_ALLOWED_WORKER_IMAGES": "good:1,bad image:1",
            "CSVKAFKA_ALLOW_SERVICE_ACCOUNT_OVERRIDE": "maybe",
        })
    text = str(err.value)
    assert "CSVKAFKA_ALLOWED_WORKER_IMAGES: Value error, not image references: bad image:1" in text
    assert "CSVKAFKA_ALLOW_SERVICE_ACCOUNT_OVERRIDE" in text
    with pytest.raises(OperatorConfigError, match="allows any image: list no other"):
        load_config({"CSVKAFKA_ALLOWED_WORKER_IMAGES": "*,a:1"})


# --- the operator's guard ----------------------------------------------------------------------

GUARDED = OperatorConfig(worker_image="reg/csv-kafka:1", allowed_worker_images=("reg/other:2",))


def test_the_guard_lets_the_default_worker_and_allowed_images_run() -> None:
    assert check_worker(spec(), GUARDED) is None
    assert check_worker(spec(worker={"image": "reg/csv-kafka:1"}), GUARDED) is None
    assert check_worker(spec(worker={"image": "reg/other:2"}), GUARDED) is None
    anything = OperatorConfig(allowed_worker_images=("*",))
    assert check_worker(spec(worker={"image": "any/where:9"}), anything) is None


def test_the_guard_refuses_another_image_naming_field_image_and_variable() -> None:
    # A tag is part of the reference: reg/other:3 is not reg/other:2.
    refusal = check_worker(spec(worker={"image": "reg/other:3"}), GUARDED)
    assert refusal is not None
    assert refusal.message.startswith("spec.worker.image reg/other:3 is not an allowed worker")
    assert "allowed: reg/csv-kafka:1, reg/other:2" in refusal.message
    assert "CSVKAFKA_ALLOWED_WORKER_IMAGES" in refusal.message


def test_the_guard_refuses_a_service_account_unless_opted_in() -> None:
    wi = spec(worker={"serviceAccountName": "admin-sa"})
    refusal = check_worker(wi, GUARDED)
    assert refusal is not None
    assert refusal.message.startswith("spec.worker.serviceAccountName admin-sa:")
    assert "CSVKAFKA_ALLOW_SERVICE_ACCOUNT_OVERRIDE=true" in refusal.message
    opted_in = GUARDED.model_copy(update={"allow_service_account_override": True})
    assert check_worker(wi, opted_in) is None
    # Both at once: one message names both fields.
    both = check_worker(spec(worker={"image": "x:1", "serviceAccountName": "sa"}), GUARDED)
    assert both is not None and len(both.problems) == 2


def test_a_refused_spec_fails_before_any_child_and_an_edit_retries() -> None:
    d = decide(1, spec(), status(), refused=True)
    assert (d.action, d.run, d.stop_job) == (Action.REFUSE, 0, False)
    patch = refused_patch(status(), 1, "spec.worker.image x:1 is not allowed", NOW)
    assert patch is not None and patch["phase"] == "Failed" and patch["observedGeneration"] == 1
    assert patch["message"].startswith("Refused, no worker started: spec.worker.image x:1")
    assert "run" not in patch and "jobName" not in patch
    failed = next(c for c in patch["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "WorkerNotAllowed")
    written = CsvIngestionStatus.model_validate(patch)
    # Written once: the operator's restart (resume) does not write or post it again.
    assert refused_patch(written, 1, "spec.worker.image x:1 is not allowed", NOW) is None
    # An edit the guard accepts starts run 1; a still refused edit is reported anew.
    d = decide(2, spec(), written)
    assert (d.action, d.run) == (Action.START_RUN, 1)
    assert refused_patch(written, 2, "spec.worker.image y:1 is not allowed", NOW) is not None


def test_a_refused_retry_keeps_the_failed_run_and_its_job() -> None:
    failed = status(phase="Failed", run=1, observedGeneration=1, jobName="a-1")
    d = decide(2, spec(retry=1), failed, refused=True)
    assert (d.action, d.run, d.stop_job) == (Action.REFUSE, 1, False)


def test_a_stricter_guard_stops_the_running_job_and_spares_what_runs_nothing() -> None:
    running = status(phase="InProgress", run=1, observedGeneration=1, jobName="a-1")
    d = decide(1, spec(), running, refused=True)
    assert (d.action, d.run, d.stop_job) == (Action.REFUSE, 1, True)
    # A suspend still just deletes the Job; Completed and suspended ingestions run nothing.
    assert decide(2, spec(suspend=True), running, refused=True).action == Action.SUSPEND
    done = status(phase="Completed", run=1, observedGeneration=1)
    assert decide(1, spec(), done, refused=True).action == Action.NOTHING


# --- manifests ---------------------------------------------------------------------------------


def test_sample_validates_against_the_model() -> None:
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "sample-csvingestion.yaml").read_text()))
    (sample,) = [d for d in docs if d and d.get("kind") == "CsvIngestion"]
    CsvIngestionSpec.model_validate(sample["spec"])


def test_operator_refuses_to_start_with_a_bad_setting() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ingest_operator"],
        env={**os.environ, "CSVKAFKA_METRICS_PORT": "99999"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "csvkafka-operator: invalid operator configuration: CSVKAFKA_METRICS_PORT: "
        "Input should be less than or equal to 65535"
    ]


# --- runs with work units ----------------------------------------------------------------------


def test_a_prefix_or_more_pods_makes_an_indexed_job_and_one_file_stays_a_plain_one() -> None:
    plain = builders.build_job("a", "ns", spec(), run=1, generation=1, default_image="i")
    assert "completionMode" not in plain["spec"] and plain["spec"]["backoffLimit"] == 6
    many = spec(source={"url": "s3://b/exports/"}, worker={"pods": 3, "backoffLimit": 2})
    job = builders.build_job("a", "ns", many, run=1, generation=1, default_image="i")
    js = job["spec"]
    # Four indexes per pod for many files: a pod that finishes early takes another batch.
    assert (js["completionMode"], js["completions"], js["parallelism"]) == ("Indexed", 12, 3)
    assert js["backoffLimitPerIndex"] == 2 and "backoffLimit" not in js
    (c,) = js["template"]["spec"]["containers"]
    assert {"name": "CSVKAFKA_INDEXES", "value": "12"} in c["env"]
    # One file in shards: one index per pod.
    shards = spec(worker={"pods": 4})
    assert shards.has_units
    js = builders.build_job("a", "ns", shards, run=1, generation=1, default_image="i")["spec"]
    assert (js["completions"], js["parallelism"]) == (4, 4)
    # An http URL's "?" is a query, not a glob.
    assert not spec(source={"url": "https://h/x.csv?sig=1"}).has_units


def test_the_worker_may_read_and_fill_only_its_own_plan() -> None:
    role = builders.build_role("sales", "ns")
    plan_rule = next(r for r in role["rules"] if r["resources"] == ["csvingestionplans"])
    assert plan_rule["resourceNames"] == ["sales"] and set(plan_rule["verbs"]) == {"get", "update"}
    plan = builders.build_plan("sales", "ns")
    assert (plan["kind"], plan["metadata"]["name"]) == ("CsvIngestionPlan", "sales")
    assert "plan" not in plan  # empty: index 0 records it


def _units(failed: int = 1, completed: int = 2, total: int = 4) -> Any:
    from ingest_worker.api.units import (
        UnitCheckpoint,
        UnitCompleted,
        UnitFailed,
        UnitKind,
        UnitsStatus,
        apply,
    )

    events: list[Any] = [UnitCompleted(UnitCheckpoint(id=i)) for i in range(completed)]
    events += [UnitFailed(UnitCheckpoint(id=completed + i, source_url=f"s3://b/f{i}.csv",
                                         byte_offset=100), "too many bad rows: 9 > 5")
               for i in range(failed)]
    return apply(UnitsStatus.begin(UnitKind.FILES, total, plan="d"), events)


def test_a_succeeded_job_with_a_failed_unit_fails_the_run_naming_the_file() -> None:
    units = _units(failed=1, completed=3, total=4)
    st = status(phase="InProgress", run=1, units=units.to_wire())
    patch = job_patch(st, 1, "a-1", JobObservation(JobState.SUCCEEDED), NOW)
    assert patch is not None and patch["phase"] == "Failed"
    assert "1 of 4 files failed: s3://b/f0.csv: too many bad rows" in patch["message"]
    done = _units(failed=0, completed=4, total=4)
    st = status(phase="InProgress", run=1, units=done.to_wire())
    patch = job_patch(st, 1, "a-1", JobObservation(JobState.SUCCEEDED), NOW)
    assert patch is not None and patch["phase"] == "Completed"
    assert patch["message"].endswith("(Files 4/4)")


def test_a_retry_runs_the_failed_units_again_from_their_checkpoints() -> None:
    units = _units(failed=1, completed=3, total=4)
    st = status(phase="Failed", run=1, units=units.to_wire(), observedGeneration=1)
    many = spec(source={"url": "s3://b/exports/"})
    d = decide(2, many, st)
    assert d.action == Action.START_RUN and not d.reset_checkpoint
    patch = start_run_patch(st, many, run=2, job_name="a-2", generation=2,
                            reset_checkpoint=False, now=NOW)
    retried = CsvIngestionStatus.model_validate({"units": patch["units"]}).units
    assert retried is not None
    assert retried.counts.to_wire() == {"pending": 0, "running": 1, "completed": 3, "failed": 0}
    assert [(u.id, u.byte_offset) for u in retried.active] == [(3, 100)]
    assert retried.retried_ids() == {3}
    assert "running the units not completed (1 of 4)" in patch["message"]
    # From the beginning: no units, and the plan is taken again.
    patch = start_run_patch(st, many, run=2, job_name="a-2", generation=2,
                            reset_checkpoint=True, now=NOW)
    assert patch["units"] is None


def test_the_operator_exports_each_ingestions_totals_from_its_status() -> None:
    from ingest_operator.metrics import IngestionIndex
    from prometheus_client import CollectorRegistry, generate_latest

    index = IngestionIndex()
    registry = CollectorRegistry()
    registry.register(index)
    index.set("ns", "a", {"phase": "InProgress", "rowsRead": 10, "rowsPublished": 9,
                          "rowsFailed": 1, "bytesRead": 500, "bytesTotal": 1000,
                          "rowsPerSecond": 2.5,
                          "checkpoint": {"time": "2026-01-01T00:00:00Z"}})
    index.set("ns", "b", {"phase": "Completed", "units": {
        "counts": {"pending": 0, "running": 1, "completed": 2, "failed": 0},
        "active": [{"id": 0, "time": "2026-01-01T00:00:10Z"}]}})
    text = generate_latest(registry).decode()
    assert 'csvkafka_operator_ingestions{phase="InProgress"} 1.0' in text
    assert 'csvkafka_ingestion_rows{name="a",namespace="ns",status="published"} 9.0' in text
    assert 'csvkafka_ingestion_bytes_total{name="a",namespace="ns"} 1000.0' in text
    assert 'csvkafka_ingestion_rows_per_second{name="a",namespace="ns"} 2.5' in text
    assert ('csvkafka_ingestion_checkpoint_timestamp_seconds{name="b",namespace="ns"} '
            '1.76722561e+09') in text
    assert 'csvkafka_ingestion_units{name="b",namespace="ns",state="completed"} 2.0' in text
    index.set("ns", "a", None)  # deleted
    assert 'name="a"' not in generate_latest(registry).decode()


def test_a_retry_that_changes_the_runs_shape_starts_from_the_beginning() -> None:
    one_file = status(phase="Failed", run=1, observedGeneration=1, sourceUrl="file:///data/a.csv",
                      checkpoint={"byteOffset": 100, "row": 5})
    d = decide(2, spec(worker={"pods": 3}), one_file)
    assert d.action == Action.START_RUN and d.reset_checkpoint
    patch = start_run_patch(one_file, spec(worker={"pods": 3}), run=2, job_name="a-2",
                            generation=2, reset_checkpoint=True, now=NOW)
    assert "shape changed" in patch["message"] and patch["checkpoint"] is None
    # The same shape resumes; a run that never progressed has nothing to carry over.
    assert not decide(2, spec(), one_file).reset_checkpoint
    fresh = status(phase="Failed", run=1, observedGeneration=1, sourceUrl="file:///data/a.csv")
    assert not decide(2, spec(worker={"pods": 3}), fresh).reset_checkpoint
