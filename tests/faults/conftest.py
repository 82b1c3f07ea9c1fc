"""Fault injection reuses the operator's integration fixtures: the CRD and RBAC from manifests/,
the operator as its Deployment; and the source tests' S3 bucket and Secrets."""

from tests.operator.conftest import (  # noqa: F401  (fixtures, re-exported for pytest)
    crd_installed,
    operator,
    operator_deployment,
    operator_kubeconfig,
    pytest_runtest_makereport,
)
from tests.operator.test_operator import ingestions  # noqa: F401
from tests.sources.conftest import make_secret, s3_bucket, s3_endpoint  # noqa: F401
