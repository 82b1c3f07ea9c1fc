"""The operator's own guard: which workers it agrees to run for a CsvIngestion.

Whoever may create a CsvIngestion would otherwise choose the image the worker runs and the
ServiceAccount it runs as, two things Kubernetes grants only to those who may create pods. The
admission policy (``manifests/admission-policy.yaml``) checks the person who writes the spec;
this guard holds on clusters without it, and bounds what even those who may create pods can
make the operator run. The operator never learns who wrote a spec, so the Secrets and the PVC
an ingestion names are the policy's alone to check.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest_operator.config import ANY_IMAGE, ENV_PREFIX, OperatorConfig
from ingest_worker.api.spec import CsvIngestionSpec

IMAGE_FIELD = "spec.worker.image"
SERVICE_ACCOUNT_FIELD = "spec.worker.serviceAccountName"
IMAGES_VARIABLE = f"{ENV_PREFIX}ALLOWED_WORKER_IMAGES"
SERVICE_ACCOUNT_VARIABLE = f"{ENV_PREFIX}ALLOW_SERVICE_ACCOUNT_OVERRIDE"


@dataclass(frozen=True)
class Refusal:
    """Why no worker runs for a spec: every field at fault, and what would allow each."""

    problems: tuple[str, ...]

    @property
    def message(self) -> str:
        return "; ".join(self.problems)


def image_allowed(image: str, config: OperatorConfig) -> bool:
    """Exact references only: a tag or a digest is part of what is allowed."""
    return ANY_IMAGE in config.allowed_worker_images or image in config.worker_images


def check_worker(spec: CsvIngestionSpec, config: OperatorConfig) -> Refusal | None:
    """None if the operator may run this spec's worker, else the Refusal naming each field."""
    problems: list[str] = []
    image = spec.worker.image
    if image is not None and not image_allowed(image, config):
        allowed = ", ".join(sorted(config.worker_images))
        problems.append(
            f"{IMAGE_FIELD} {image} is not an allowed worker image (allowed: {allowed}); "
            f"an administrator allows it by adding it to {IMAGES_VARIABLE} on the operator"
        )
    account = spec.worker.service_account_name
    if account is not None and not config.allow_service_account_override:
        problems.append(
            f"{SERVICE_ACCOUNT_FIELD} {account}: running the worker as a ServiceAccount of "
            "the namespace is not allowed (leave the field out to run as the one the operator "
            f"makes); an administrator allows it with {SERVICE_ACCOUNT_VARIABLE}=true on the "
            "operator"
        )
    return Refusal(tuple(problems)) if problems else None
