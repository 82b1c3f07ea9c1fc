"""A secured broker: the local Kafka's SASL/SCRAM-over-TLS and mutual-TLS listeners
(hack/testenv.sh, hack/kafka_pki.py), reached by worker pods with the credentials of
``spec.kafka.secretRef``; what a user gets wrong ends ``Failed`` naming the cause, and no secret
value shows in logs, status or Events."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from ingest_worker.verify import verify
from tests.conftest import TestEnv, run_kubectl
from tests.node import DataVolume
from tests.operator.conftest import OperatorDeployment, write_csv
from tests.operator.test_operator import Ingestions, ingestion

ROWS = 5_000


def _pki(testenv: TestEnv, name: str) -> str:
    return (Path(testenv.environ["CSVKAFKA_KAFKA_PKI"]) / name).read_text()


def _sasl(testenv: TestEnv, password: str | None = None, ca: str = "ca.crt") -> dict[str, str]:
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": testenv.environ["CSVKAFKA_KAFKA_USER"],
        "sasl.password": password or testenv.environ["CSVKAFKA_KAFKA_PASSWORD"],
        "ssl.ca.pem": _pki(testenv, ca),
    }


def _mtls(testenv: TestEnv, cert: str = "client") -> dict[str, str]:
    return {
        "security.protocol": "SSL",
        "ssl.ca.pem": _pki(testenv, "ca.crt"),
        "ssl.certificate.pem": _pki(testenv, f"{cert}.crt"),
        "ssl.key.pem": _pki(testenv, f"{cert}.key"),
    }


def _secured(
    ingestions: Ingestions, name: str, csv: Path, data: DataVolume, topic: str,
    bootstrap: str, secret: dict[str, str],
) -> None:
    """An ingestion of ``csv`` through ``bootstrap`` with ``secret`` as its Kafka Secret."""
    ingestions.core.create_namespaced_secret(ingestions.ns, {
        "metadata": {"name": f"{name}-kafka"}, "stringData": secret})
    body = ingestion(name, data.source(csv), topic, bootstrap)
    body["spec"]["kafka"]["secretRef"] = {"name": f"{name}-kafka"}
    ingestions.create(body)


def _secret_values(secret: dict[str, str]) -> list[str]:
    """What must never be printed: the password, and the private key's body."""
    out = [v for k, v in secret.items() if k == "sasl.password"]
    if "ssl.key.pem" in secret:
        out.append(secret["ssl.key.pem"].splitlines()[1])
    return out


def _everything_said(ingestions: Ingestions, testenv: TestEnv, operator: OperatorDeployment,
                     name: str) -> str:
    """The worker pods' logs, the operator's, the resource's status and its Events."""
    pods = run_kubectl(testenv, "-n", ingestions.ns, "logs", "-l", f"csvkafka.io/ingestion={name}",
                       "--all-containers", "--tail=-1", "--prefix", check=False).stdout
    return "\n".join([pods, operator.log_text(), str(ingestions.status(name)),
                      *ingestions.events(name)])


def test_sasl_scram_over_tls_and_mutual_tls_deliver_every_row(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv,
    new_topic: Callable[..., str], data: DataVolume,
) -> None:
    csv = write_csv(data.path / "secured.csv", ROWS)
    env = testenv.environ
    secrets = {"sasl": _sasl(testenv), "mtls": _mtls(testenv)}
    topics = {}
    for name, bootstrap in (("sasl", env["CSVKAFKA_KAFKA_SASL_BOOTSTRAP"]),
                            ("mtls", env["CSVKAFKA_KAFKA_MTLS_BOOTSTRAP"])):
        topics[name] = new_topic(partitions=2)
        _secured(ingestions, name, csv, data, topics[name], bootstrap, secrets[name])
    for name, topic in topics.items():
        st = ingestions.wait_phase(name, "Completed", timeout=180)
        assert st["rowsPublished"] == ROWS, st
        report = verify(str(csv), topic, testenv.kafka_bootstrap,
                        source_url=data.url(csv), timeout=60)
        assert report.ok and report.duplicates == 0, report.summary()
        said = _everything_said(ingestions, testenv, operator, name)
        for value in _secret_values(secrets[name]):
            assert value not in said, f"a secret value of {name} was printed"


@pytest.mark.parametrize(("case", "cause"), [
    ("wrong-password", "SASL authentication error: Authentication failed during authentication "
                       "due to invalid credentials with SASL mechanism SCRAM-SHA-512"),
    ("unknown-ca", "certificate verify failed"),
    ("expired-cert", "the client certificate (ssl.certificate.pem, CN=ingest-mtls) expired on"),
])
def test_bad_credentials_fail_naming_the_cause_and_print_no_secret(
    case: str, cause: str, operator: OperatorDeployment, ingestions: Ingestions,
    testenv: TestEnv, new_topic: Callable[..., str], data: DataVolume,
) -> None:
    csv = write_csv(data.path / "bad.csv", 100)
    env = testenv.environ
    secret, bootstrap = {
        "wrong-password": (_sasl(testenv, password="not-the-Passw0rd"),
                           env["CSVKAFKA_KAFKA_SASL_BOOTSTRAP"]),
        "unknown-ca": (_sasl(testenv, ca="unknown-ca.crt"), env["CSVKAFKA_KAFKA_SASL_BOOTSTRAP"]),
        "expired-cert": (_mtls(testenv, cert="expired"), env["CSVKAFKA_KAFKA_MTLS_BOOTSTRAP"]),
    }[case]
    t0 = time.monotonic()
    _secured(ingestions, case, csv, data, new_topic(partitions=1), bootstrap, secret)
    st = ingestions.wait_phase(case, "Failed", timeout=180)
    print(f"[{case}] Failed after {time.monotonic() - t0:.1f} s: {st['message']}")
    assert cause in st["message"], st["message"]
    # A login that cannot succeed is not retried pod after pod.
    assert len(ingestions.worker_pods(f"{case}-1")) == 1
    said = _everything_said(ingestions, testenv, operator, case)
    for value in [*_secret_values(secret), testenv.environ["CSVKAFKA_KAFKA_PASSWORD"]]:
        assert value not in said, f"a secret value was printed ({case})"


def test_an_acl_denying_writes_fails_at_once_naming_the_permission(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv,
    new_topic: Callable[..., str], data: DataVolume,
) -> None:
    """The principal may describe the topic but not write to it: the first produce answer
    ends the run (a retry cannot grant a permission), long before the retry budget."""
    csv = write_csv(data.path / "denied.csv", 1_000)
    topic = new_topic(partitions=1)
    principal = f"User:{testenv.environ['CSVKAFKA_KAFKA_USER']}"
    admin = AdminClient({"bootstrap.servers": testenv.kafka_bootstrap})
    acls = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                       op, permission)
            for op, permission in ((AclOperation.DESCRIBE, AclPermissionType.ALLOW),
                                   (AclOperation.WRITE, AclPermissionType.DENY))]
    for future in admin.create_acls(acls).values():
        future.result(timeout=30)
    t0 = time.monotonic()
    sasl = testenv.environ["CSVKAFKA_KAFKA_SASL_BOOTSTRAP"]
    _secured(ingestions, "denied", csv, data, topic, sasl, _sasl(testenv))
    st = ingestions.wait_phase("denied", "Failed", timeout=120)  # the budget is 300 s
    print(f"[acl] Failed after {time.monotonic() - t0:.1f} s: {st['message']}")
    assert f"not authorized to write to topic {topic}" in st["message"], st["message"]
    assert st.get("rowsPublished", 0) == 0
    assert len(ingestions.worker_pods("denied-1")) == 1

