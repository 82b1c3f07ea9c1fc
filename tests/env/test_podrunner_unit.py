"""Unit tests of the pod runner's pure logic (hack/podrunner.py): no API server needed."""

from __future__ import annotations

import base64
import importlib.util
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    # hack/ is not a package: load the script by path.
    spec = importlib.util.spec_from_file_location("podrunner", ROOT / "hack" / "podrunner.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["podrunner"] = module
    spec.loader.exec_module(module)
    return module


pr = _load()

POD: dict[str, Any] = {
    "metadata": {
        "name": "job-abc12",
        "namespace": "ns1",
        "uid": "1111-2222",
        "labels": {"app": "demo", "batch.kubernetes.io/job-completion-index": "3"},
        "annotations": {"note": "hello"},
    },
    "spec": {"nodeName": "local-runner", "serviceAccountName": "worker", "containers": []},
}


def lookup(objects: Mapping[str, Mapping[str, bytes]]) -> Any:
    return lambda name: objects.get(name)


NO_OBJECTS = lookup({})


def env_of(
    container: dict[str, Any],
    secrets: Any = NO_OBJECTS,
    configmaps: Any = NO_OBJECTS,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env, _declared = pr.resolve_env(
        POD, container, secrets=secrets, configmaps=configmaps, base=base or {}
    )
    return dict(env)


# ---- $(VAR) expansion ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "x"),
        ("pre-$(A)-$(B)-post", "pre-x-y z-post"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),  # escaped
        ("$$$(A)", "$x"),
        ("cost: $5", "cost: $5"),
        ("trailing $", "trailing $"),
        ("$(A", "$(A"),  # unterminated
        ("$()", "$()"),
        ("no refs", "no refs"),
        ("${A}", "${A}"),  # shell syntax is not Kubernetes syntax
    ],
)
def test_expand_vars(text: str, expected: str) -> None:
    assert pr.expand_vars(text, {"A": "x", "B": "y z"}) == expected


# ---- argv ---------------------------------------------------------------------------------


def test_argv_command_and_args_with_python_replaced() -> None:
    c = {"command": ["python", "-m", "ingest_worker"], "args": ["--topic", "$(TOPIC)"]}
    assert pr.build_argv(c, {"TOPIC": "t1"}, "/venv/bin/python") == [
        "/venv/bin/python",
        "-m",
        "ingest_worker",
        "--topic",
        "t1",
    ]


@pytest.mark.parametrize("argv0", ["python3", "python3.12", "/usr/local/bin/python"])
def test_argv_python_variants(argv0: str) -> None:
    assert pr.build_argv({"command": [argv0, "-c", "1"]}, {}, "/py")[0] == "/py"


def test_argv_args_only_and_other_programs_untouched() -> None:
    assert pr.build_argv({"args": ["kubectl", "version"]}, {}, "/py") == ["kubectl", "version"]
    assert pr.build_argv({"command": ["sh", "-c", "echo $(X)"]}, {"X": "1"}, "/py") == [
        "sh",
        "-c",
        "echo 1",
    ]
    assert pr.build_argv({"command": ["pythonista"]}, {}, "/py") == ["pythonista"]


def test_argv_empty_is_a_start_error() -> None:
    with pytest.raises(pr.ConfigError) as err:
        pr.build_argv({"image": "x"}, {}, "/py")
    assert err.value.reason == "StartError"


# ---- env resolution -----------------------------------------------------------------------


def test_env_order_values_expansion_and_base() -> None:
    c = {
        "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}, "prefix": "S_"}],
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "$(A)-$(FROM_CM)-$(LATER)"},
            {"name": "LATER", "value": "2"},
            {"name": "FROM_CM", "value": "overridden"},
        ],
    }
    env = env_of(
        c,
        secrets=lookup({"s": {"pw": b"secret"}}),
        configmaps=lookup({"cm": {"FROM_CM": b"cmval", "bad=key": b"skipped"}}),
        base={"PATH": "/bin", "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
    )
    assert env["PATH"] == "/bin"
    assert "KUBERNETES_SERVICE_HOST" not in env
    assert env["S_pw"] == "secret"
    assert env["A"] == "1"
    # Earlier declarations (envFrom included) are visible, later ones are not.
    assert env["B"] == "1-cmval-$(LATER)"
    assert env["FROM_CM"] == "overridden"
    assert "bad=key" not in env


def test_env_base_is_not_visible_to_expansion() -> None:
    env = env_of({"env": [{"name": "P", "value": "$(PATH)"}]}, base={"PATH": "/bin"})
    assert env["P"] == "$(PATH)"


def test_env_value_from_secret_and_configmap_keys() -> None:
    c = {
        "env": [
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "level"}}},
            {
                "name": "OPT1",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
            {
                "name": "OPT2",
                "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nokey", "optional": True}},
            },
        ]
    }
    env = env_of(
        c, secrets=lookup({"s": {"pw": b"p@ss"}}), configmaps=lookup({"cm": {"level": b"debug"}})
    )
    assert env["PW"] == "p@ss" and env["LVL"] == "debug"
    assert "OPT1" not in env and "OPT2" not in env


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ({"envFrom": [{"secretRef": {"name": "gone"}}]}, 'secret "gone" not found'),
        ({"envFrom": [{"configMapRef": {"name": "gone"}}]}, 'configmap "gone" not found'),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]},
            'secret "gone" not found',
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            "couldn't find key k in Secret ns1/s",
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]},
            "couldn't find key k in ConfigMap ns1/cm",
        ),
    ],
)
def test_env_missing_references_are_config_errors(container: dict[str, Any], message: str) -> None:
    with pytest.raises(pr.ConfigError) as err:
        env_of(container, secrets=lookup({"s": {}}), configmaps=lookup({"cm": {}}))
    assert str(err.value) == message
    assert err.value.reason == "CreateContainerConfigError"


def test_env_optional_envfrom_missing_is_skipped() -> None:
    env = env_of({"envFrom": [{"secretRef": {"name": "gone", "optional": True}}]})
    assert env == {}


def test_env_field_refs() -> None:
    def ref(path: str) -> dict[str, Any]:
        return {"name": path, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    paths = [
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "spec.serviceAccountName",
        "status.podIP",
        "metadata.labels['batch.kubernetes.io/job-completion-index']",
        "metadata.annotations['note']",
        "metadata.labels['absent']",
    ]
    env = env_of({"env": [ref(p) for p in paths]})
    assert [env[p] for p in paths] == [
        "job-abc12",
        "ns1",
        "1111-2222",
        "local-runner",
        "worker",
        "127.0.0.1",
        "3",
        "hello",
        "",
    ]


def test_env_resource_field_ref() -> None:
    c = {
        "resources": {"limits": {"memory": "256Mi", "cpu": "500m"}},
        "env": [
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ],
    }
    env = env_of(c)
    assert env["MEM"] == "256"
    assert env["CPU"] == "1"  # rounded up, as kubelet does


def test_secret_and_configmap_decoding() -> None:
    secret = {"data": {"k": base64.b64encode(b"\x00bin").decode()}, "stringData": {"s": "v"}}
    assert pr.decode_secret_data(secret) == {"k": b"\x00bin", "s": b"v"}
    cm = {"data": {"a": "text"}, "binaryData": {"b": base64.b64encode(b"\xff").decode()}}
    assert pr.decode_configmap_data(cm) == {"a": b"text", "b": b"\xff"}


# ---- paths and volumes ----------------------------------------------------------------------

MOUNTS = sorted(
    [("/etc/conf", "/state/vol/conf"), ("/etc/conf/tls", "/state/vol/tls"), ("/data", "/d")],
    key=lambda m: len(m[0]),
    reverse=True,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/etc/conf", "/state/vol/conf"),
        ("/etc/conf/app.yaml", "/state/vol/conf/app.yaml"),
        ("/etc/conf/tls/ca.crt", "/state/vol/tls/ca.crt"),  # the longest mountPath wins
        ("/etc/config/x", "/etc/config/x"),  # a prefix of a name is not a path prefix
        ("--ca-file=/etc/conf/tls/ca.crt", "--ca-file=/state/vol/tls/ca.crt"),
        ("relative/etc/conf", "relative/etc/conf"),
        ("/data/", "/d/"),
        ("s3://bucket/etc/conf", "s3://bucket/etc/conf"),
    ],
)
def test_rewrite_path(value: str, expected: str) -> None:
    assert pr.rewrite_path(value, MOUNTS) == expected


def test_volume_env_name() -> None:
    assert pr.volume_env_name("kafka-tls.certs") == "CSVKAFKA_VOLUME_KAFKA_TLS_CERTS"


def test_volume_files_secret_all_keys_and_items() -> None:
    secrets = lookup({"s": {"a": b"1", "b": b"2"}})
    whole = {"name": "v", "secret": {"secretName": "s"}}
    assert pr.volume_files(whole, secrets=secrets, configmaps=NO_OBJECTS) == [
        ("a", b"1", 0o644),
        ("b", b"2", 0o644),
    ]
    items = {
        "name": "v",
        "secret": {
            "secretName": "s",
            "defaultMode": 0o400,
            "items": [
                {"key": "b", "path": "sub/b.txt", "mode": 0o600},
                {"key": "a", "path": "a.txt"},
            ],
        },
    }
    assert pr.volume_files(items, secrets=secrets, configmaps=NO_OBJECTS) == [
        ("sub/b.txt", b"2", 0o600),
        ("a.txt", b"1", 0o400),
    ]


def test_volume_files_configmap_missing_and_optional() -> None:
    vol: dict[str, Any] = {"name": "v", "configMap": {"name": "cm"}}
    with pytest.raises(pr.ConfigError) as err:
        pr.volume_files(vol, secrets=NO_OBJECTS, configmaps=NO_OBJECTS)
    assert err.value.reason == "ContainerCreating"
    vol["configMap"]["optional"] = True
    assert pr.volume_files(vol, secrets=NO_OBJECTS, configmaps=NO_OBJECTS) == []
    bad_key = {"name": "v", "configMap": {"name": "cm", "items": [{"key": "x", "path": "x"}]}}
    with pytest.raises(pr.ConfigError):
        pr.volume_files(bad_key, secrets=NO_OBJECTS, configmaps=lookup({"cm": {}}))


def test_volume_files_rejects_escaping_paths() -> None:
    vol = {"name": "v", "configMap": {"name": "cm", "items": [{"key": "k", "path": "../x"}]}}
    with pytest.raises(pr.ConfigError):
        pr.volume_files(vol, secrets=NO_OBJECTS, configmaps=lookup({"cm": {"k": b""}}))


def test_volume_files_other_kinds() -> None:
    assert (
        pr.volume_files({"name": "e", "emptyDir": {}}, secrets=NO_OBJECTS, configmaps=NO_OBJECTS)
        is None
    )


# ---- exit codes and statuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "code", "reason"),
    [
        (0, 0, "Completed"),
        (1, 1, "Error"),
        (-signal.SIGKILL, 137, "Error"),
        (-signal.SIGTERM, 143, "Error"),
        (2, 2, "Error"),
    ],
)
def test_exit_code_mapping(returncode: int, code: int, reason: str) -> None:
    assert pr.exit_code_of(returncode) == code
    assert pr.terminated_reason(code) == reason


def test_tail_text_bounds() -> None:
    data = b"".join(f"line {i}\n".encode() for i in range(200))
    tail = pr.tail_text(data)
    assert tail.splitlines()[-1] == "line 199"
    assert len(tail.splitlines()) == 80
    assert len(pr.tail_text(b"x" * 10000)) == 4096


def test_terminal_status_shapes() -> None:
    c = {"name": "main", "image": "csv-kafka:dev"}
    state = pr.terminated_state(
        exit_code=137,
        reason="Error",
        started_at="t0",
        finished_at="t1",
        container_id="local://42",
        signal_no=9,
    )
    st = pr.terminal_status(
        c, exit_code=137, state=state, start_time="t0", restart_count=0, container_id="local://42"
    )
    assert st["phase"] == "Failed"
    cs = st["containerStatuses"][0]
    assert cs["state"]["terminated"]["exitCode"] == 137
    assert cs["ready"] is False and cs["started"] is False
    ready = {c["type"]: c["status"] for c in st["conditions"]}
    assert ready["Ready"] == "False" and ready["PodScheduled"] == "True"
    ok = pr.terminal_status(c, exit_code=0, state={}, start_time=None, restart_count=0)
    assert ok["phase"] == "Succeeded" and "startTime" not in ok


def test_running_status_shape() -> None:
    st = pr.running_status(
        {"name": "main", "image": "img"}, pid=7, started_at="t", start_time="t", restart_count=0
    )
    cs = st["containerStatuses"][0]
    assert st["phase"] == "Running" and st["podIP"] == "127.0.0.1"
    assert cs["containerID"] == "local://7" and cs["ready"] and cs["started"]
    assert {c["type"] for c in st["conditions"]} >= {
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    }


def test_restart_policy() -> None:
    assert not pr.should_restart("Never", 1)
    assert pr.should_restart("OnFailure", 1) and not pr.should_restart("OnFailure", 0)
    assert pr.should_restart("Always", 0)
    assert [pr.restart_backoff(n) for n in (1, 2, 3, 10)] == [1, 2, 4, 30]


# ---- scheduling and identity ------------------------------------------------------------------


def test_schedulable_here() -> None:
    labels = {"kubernetes.io/hostname": "me", "kubernetes.io/os": "linux"}

    def pod(**spec: Any) -> dict[str, Any]:
        return {"metadata": {"name": "p"}, "spec": spec, "status": {"phase": "Pending"}}

    assert pr.schedulable_here(pod(), "me", labels)
    assert not pr.schedulable_here(pod(nodeName="other"), "me", labels)
    assert not pr.schedulable_here(pod(schedulerName="custom"), "me", labels)
    assert not pr.schedulable_here(pod(nodeSelector={"kubernetes.io/hostname": "x"}), "me", labels)
    assert pr.schedulable_here(pod(nodeSelector={"kubernetes.io/os": "linux"}), "me", labels)
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert not pr.schedulable_here(deleting, "me", labels)
    # A second runner binds only pods that name it.
    assert not pr.schedulable_here(pod(), "me", labels, "selected")
    assert pr.schedulable_here(
        pod(nodeSelector={"kubernetes.io/hostname": "me"}), "me", labels, "selected"
    )
    assert not pr.schedulable_here(pod(), "me", labels, "none")


def test_cluster_entry_inlines_ca_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA")
    kc = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [
            {
                "name": "k",
                "cluster": {"server": "https://127.0.0.1:1", "certificate-authority": "ca.crt"},
            }
        ],
    }
    assert pr.cluster_entry(kc, str(tmp_path)) == {
        "server": "https://127.0.0.1:1",
        "certificate-authority-data": base64.b64encode(b"CA").decode(),
    }


def test_pod_kubeconfig() -> None:
    cluster = {"server": "https://127.0.0.1:1", "certificate-authority-data": "Q0E="}
    kc = pr.pod_kubeconfig(cluster, "/s/token", "tok", "ns1", "system:serviceaccount:ns1:w")
    assert kc["current-context"] == "pod"
    assert kc["contexts"][0]["context"]["namespace"] == "ns1"
    assert kc["users"][0]["user"] == {"token": "tok", "tokenFile": "/s/token"}
    assert kc["clusters"][0]["cluster"] == cluster


def test_base_env_puts_interpreter_bin_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    env = pr.base_env("/venv/bin/python")
    assert env["PATH"] == "/venv/bin:/usr/bin:/bin"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert set(env) == {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED"}


def test_our_interpreter_is_not_rewritten_even_under_a_mounted_path() -> None:
    # The project may be cloned under /tmp while the worker pod mounts an emptyDir at /tmp.
    python = "/tmp/clone/.venv/bin/python"
    mounts = [("/tmp", "/state/pods/p/volumes/tmp")]
    container = {"command": ["python", "-m", "worker"], "args": ["--out=/tmp/x", "/tmp/y"]}
    assert pr.container_argv(container, {}, python, mounts) == [
        python,
        "-m",
        "worker",
        "--out=/state/pods/p/volumes/tmp/x",
        "/state/pods/p/volumes/tmp/y",
    ]
    # An argv[0] that is the container's own path is still the container's.
    tool = {"command": ["/tmp/tool"]}
    assert pr.container_argv(tool, {}, python, mounts) == ["/state/pods/p/volumes/tmp/tool"]
