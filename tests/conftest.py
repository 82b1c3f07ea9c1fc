"""Session fixtures over the local environment (hack/testenv.sh): a real Kubernetes cluster (one
node, containerd, the operator as its Deployment) and a real Kafka broker, started once per
session and reused; a fresh namespace and fresh topic names per test so tests never see each
other's data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from tests.node import DataVolume, create_data_volume, delete_data_volume

ROOT = Path(__file__).resolve().parent.parent
TESTENV_SCRIPT = ROOT / "hack" / "testenv.sh"


@dataclass(frozen=True)
class TestEnv:
    __test__ = False  # not a test class, despite the name

    state_dir: Path
    kubeconfig: Path
    kafka_bootstrap: str
    environ: dict[str, str]

    @property
    def image(self) -> str:
        """The image built from this tree, which the operator and its workers run."""
        return self.environ["CSVKAFKA_IMAGE"]


def _read_env_file(path: Path) -> dict[str, str]:
    # The env file is shell (`export K="v"`), with $PATH expanded by a shell here.
    out = subprocess.run(
        ["bash", "-c", f'source "{path}" && env -0'], check=True, capture_output=True
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


@pytest.fixture(scope="session")
def testenv() -> TestEnv:
    """Brings the environment up (idempotent: a running one is reused) and describes it."""
    what = os.environ.get("CSVKAFKA_TESTENV_COMPONENTS", "all")
    subprocess.run(["bash", str(TESTENV_SCRIPT), "up", what], check=True)
    state = Path(os.environ.get("CSVKAFKA_TESTENV", ROOT / ".testenv"))
    environ = _read_env_file(state / "env")
    # Make the environment visible to code under test that reads the process environment.
    for key in ("KUBECONFIG", "KAFKA_BOOTSTRAP_SERVERS", "PATH", "CSVKAFKA_TESTENV",
                "CONTAINER_RUNTIME_ENDPOINT", "CSVKAFKA_NODE_NETNS", "CSVKAFKA_NODE_IP"):
        os.environ[key] = environ[key]
    return TestEnv(
        state_dir=state,
        kubeconfig=Path(environ["KUBECONFIG"]),
        kafka_bootstrap=environ["KAFKA_BOOTSTRAP_SERVERS"],
        environ=environ,
    )


def built_tool(script: str) -> Path:
    """Runs a hack/build-*.sh script (a no-op once its tool is cached) and returns the path of
    the tool, which the script prints last."""
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / script)], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


# --- Kafka -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap(testenv: TestEnv) -> str:
    return testenv.kafka_bootstrap


@pytest.fixture(scope="session")
def schema_registry(testenv: TestEnv) -> str:
    """The URL of the environment's Schema Registry (Confluent's REST API, in memory)."""
    return testenv.environ["CSVKAFKA_SCHEMA_REGISTRY_URL"]


@dataclass(frozen=True)
class SecuredRegistry:
    url: str
    username: str
    password: str


@pytest.fixture(scope="session")
def secured_registry(testenv: TestEnv) -> SecuredRegistry:
    """The environment's second Schema Registry, which asks for basic auth (one user)."""
    e = testenv.environ
    return SecuredRegistry(e["CSVKAFKA_SCHEMA_REGISTRY_AUTH_URL"],
                           e["CSVKAFKA_SCHEMA_REGISTRY_AUTH_USER"],
                           e["CSVKAFKA_SCHEMA_REGISTRY_AUTH_PASSWORD"])


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def new_topic(kafka_admin: AdminClient) -> Callable[..., str]:
    """A factory of fresh topics: ``new_topic(partitions=6) -> name``."""

    def create(partitions: int = 6, prefix: str = "t") -> str:
        name = unique_name(prefix)
        futures = kafka_admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=30)
        futures[name].result(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = kafka_admin.list_topics(name, timeout=10).topics.get(name)
            if md is not None and md.error is None and len(md.partitions) == partitions:
                return name
            time.sleep(0.1)
        raise TimeoutError(f"topic {name} did not become visible")

    return create


def consume_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0
) -> list[Message]:
    """Reads a topic from the beginning to its end.

    Waits until the topic holds at least ``expected`` messages (or ``timeout`` passes), then
    returns every message up to the high watermarks: duplicates and extras included, so callers
    can assert exact counts.
    """
    from ingest_worker.verify import consume

    messages: list[Message] = consume(bootstrap, topic, timeout=timeout, min_messages=expected)
    return messages


@pytest.fixture
def consume_all(kafka_bootstrap: str) -> Callable[..., list[Message]]:
    """``consume_all(topic, expected, timeout=60) -> list[Message]`` (see consume_topic)."""

    def consume(topic: str, expected: int, timeout: float = 60.0) -> list[Message]:
        return consume_topic(kafka_bootstrap, topic, expected, timeout)

    return consume


@dataclass
class ComponentControl:
    """Stops and starts one component of the environment, for fault injection."""

    testenv: TestEnv
    component: str

    def _run(self, action: str) -> None:
        subprocess.run(
            ["bash", str(TESTENV_SCRIPT), f"{self.component}-{action}"],
            check=True,
            env={**os.environ, "CSVKAFKA_TESTENV": str(self.testenv.state_dir)},
        )

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")


@pytest.fixture
def kafka_control(testenv: TestEnv) -> Iterator[ComponentControl]:
    control = ComponentControl(testenv, "kafka")
    yield control
    control.start()  # never leave the broker down for the next test


@pytest.fixture
def apiserver_control(testenv: TestEnv) -> Iterator[ComponentControl]:
    control = ComponentControl(testenv, "apiserver")
    yield control
    control.start()


# --- Kubernetes --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube_api(testenv: TestEnv):  # type: ignore[no-untyped-def]
    from kubernetes import config

    return config.new_client_from_config(config_file=str(testenv.kubeconfig))


def run_kubectl(
    testenv: TestEnv, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs kubectl with the environment's kubeconfig; raises on failure when ``check``."""
    proc = subprocess.run(
        ["kubectl", *args],
        capture_output=True,
        text=True,
        input=input,
        env={**os.environ, **testenv.environ},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@pytest.fixture
def kubectl(testenv: TestEnv) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl(*args, check=True, input=None)``, with the environment's kubeconfig."""

    def run(
        *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(testenv, *args, input=input, check=check)

    return run


@pytest.fixture
def namespace(kube_api) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh namespace that enforces the Pod Security `restricted` level."""
    from kubernetes import client

    name = unique_name("test")
    core = client.CoreV1Api(kube_api)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            )
        )
    )
    # The controller-manager creates the default ServiceAccount shortly after the namespace.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except client.ApiException:
            time.sleep(0.1)
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def data(kube_api, namespace: str, testenv: TestEnv) -> Iterator[DataVolume]:  # type: ignore[no-untyped-def]
    """Files the test writes under ``data.path`` and its worker pods read through the claim
    ``data`` (``data.source(path)`` is the matching ``spec.source``)."""
    volume = create_data_volume(kube_api, namespace, testenv.state_dir / "data")
    yield volume
    delete_data_volume(kube_api, namespace)
    shutil.rmtree(volume.path, ignore_errors=True)


SCENARIO_START = [time.monotonic()]
"""When the running test started: the fault report's time column (tests/faults)."""


@pytest.fixture(autouse=True)
def scenario_clock() -> Iterator[None]:
    SCENARIO_START[0] = time.monotonic()
    yield
