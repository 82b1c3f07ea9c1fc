"""The operator's settings, read from ``CSVKAFKA_*`` environment variables and validated at
start-up: a wrong value stops the operator with one message naming every bad variable."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "CSVKAFKA_"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ConfigError(Exception):
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

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
            return () if items in ([], ["*"]) else tuple(items)
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


def load_config(environ: Mapping[str, str]) -> OperatorConfig:
    """Reads the configuration; raises ConfigError naming every bad variable."""
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
        raise ConfigError(f"invalid operator configuration: {problems}") from None
