"""The operator's settings, read from ``CSVKAFKA_*`` environment variables and validated at
start-up: a wrong value stops the operator with one message naming every bad variable."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

ENV_PREFIX = "CSVKAFKA_"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The characters of an image reference ([registry[:port]/]path[:tag][@digest]). Loose on
# purpose, the runtime is the judge: it catches a stray space, quote or separator.
_IMAGE_REF = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._:/@-]*$")
ANY_IMAGE = "*"


class OperatorConfigError(Exception):
    """The environment does not describe a valid configuration."""


class OperatorConfig(BaseModel):
    """Every setting, with its environment variable (``CSVKAFKA_`` + the upper-cased name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    watch_namespaces: tuple[str, ...] = ()
    """CSVKAFKA_WATCH_NAMESPACES: comma-separated namespaces to watch; empty or ``*`` means
    every namespace (cluster-wide)."""
    worker_image: str = Field(default="csv-kafka:0.1.0", min_length=1)
    """CSVKAFKA_WORKER_IMAGE: the worker image for ingestions that do not set spec.worker.image
    (normally the operator's own image)."""
    allowed_worker_images: tuple[str, ...] = ()
    """CSVKAFKA_ALLOWED_WORKER_IMAGES: comma-separated images an ingestion may name in
    spec.worker.image, exact references; the worker image above is always allowed; ``*`` allows
    any image (leave the choice to the admission policy alone)."""
    allow_service_account_override: bool = False
    """CSVKAFKA_ALLOW_SERVICE_ACCOUNT_OVERRIDE: whether an ingestion may set
    spec.worker.serviceAccountName, i.e. run its worker as any ServiceAccount of its namespace."""
    worker_image_pull_policy: str = Field(
        default="IfNotPresent", pattern=r"^(Always|IfNotPresent|Never)$"
    )
    """CSVKAFKA_WORKER_IMAGE_PULL_POLICY: imagePullPolicy of worker containers."""
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """CSVKAFKA_METRICS_PORT: port of the Prometheus /metrics endpoint; 0 disables it."""
    health_port: int = Field(default=8080, ge=0, le=65535)
    """CSVKAFKA_HEALTH_PORT: port of the liveness/readiness endpoint (/healthz); 0 disables it."""
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    """CSVKAFKA_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    leader_election: bool = True
    """CSVKAFKA_LEADER_ELECTION: run the handlers only while holding the Lease below, so
    replicas stand by (needs POD_NAME and POD_NAMESPACE); ``false`` runs them at once, for one
    process outside a cluster."""
    lease_name: str = Field(default="csvkafka-operator", min_length=1, max_length=253)
    """CSVKAFKA_LEASE_NAME: the coordination.k8s.io Lease, in the operator's own namespace (the
    Role in manifests/rbac.yaml grants get and update on this name only)."""
    lease_duration_seconds: int = Field(default=15, ge=2, le=3600)
    """CSVKAFKA_LEASE_DURATION_SECONDS: how long a standby waits, after it last saw the Lease
    change, before it takes the Lease over."""
    renew_deadline_seconds: float = Field(default=10.0, gt=0)
    """CSVKAFKA_RENEW_DEADLINE_SECONDS: the leader stops and exits when it has not renewed the
    Lease for this long; less than the lease duration, so it is gone before a standby takes
    over."""
    retry_period_seconds: float = Field(default=2.0, gt=0)
    """CSVKAFKA_RETRY_PERIOD_SECONDS: how often the leader renews and a standby looks."""

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            items = _items(value)
            return () if items in ((), ("*",)) else items
        return value

    @field_validator("allowed_worker_images", mode="before")
    @classmethod
    def _split_images(cls, value: object) -> object:
        return _items(value) if isinstance(value, str) else value

    @field_validator("allowed_worker_images")
    @classmethod
    def _image_refs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if ANY_IMAGE in value and len(value) > 1:
            raise ValueError(f"{ANY_IMAGE} allows any image: list no other")
        bad = [ref for ref in value if ref != ANY_IMAGE and not _IMAGE_REF.match(ref)]
        if bad:
            raise ValueError(f"not image references: {', '.join(bad)}")
        return value

    # The margins of client-go's leaderelection.NewLeaderElector: the leader must give up (renew
    # deadline) before a standby may take over (lease duration), and must get a few tries first.
    @field_validator("renew_deadline_seconds")
    @classmethod
    def _before_expiry(cls, value: float, info: ValidationInfo) -> float:
        duration = info.data.get("lease_duration_seconds")
        if duration is not None and value >= duration:
            raise ValueError(f"must be less than the lease duration ({duration} s)")
        return value

    @field_validator("retry_period_seconds")
    @classmethod
    def _retries_fit(cls, value: float, info: ValidationInfo) -> float:
        deadline = info.data.get("renew_deadline_seconds")
        if deadline is not None and value * 1.2 >= deadline:
            raise ValueError(f"1.2 times it must be less than the renew deadline ({deadline} s)")
        return value

    @field_validator("watch_namespaces")
    @classmethod
    def _dns_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [ns for ns in value if not _DNS_LABEL.match(ns) or len(ns) > 63]
        if bad:
            raise ValueError(f"not namespace names: {', '.join(bad)}")
        return value

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    @property
    def worker_images(self) -> frozenset[str]:
        """The images a worker may run: the default worker image and the allowlist."""
        return frozenset((self.worker_image, *self.allowed_worker_images))


def _items(value: str) -> tuple[str, ...]:
    """A comma-separated list, without blanks."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def load_config(environ: Mapping[str, str]) -> OperatorConfig:
    """Reads the configuration; raises OperatorConfigError naming every bad variable."""
    values = {
        name: environ[ENV_PREFIX + name.upper()]
        for name in OperatorConfig.model_fields
        if ENV_PREFIX + name.upper() in environ
    }
    try:
        return OperatorConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise OperatorConfigError(f"invalid operator configuration: {problems}") from None
