"""Fixtures for the scale-out tests: the operator's and the object stores' (re-exported)."""

from tests.sources.conftest import (  # noqa: F401  (fixtures, re-exported for pytest)
    crd_installed,
    ingestions,
    make_secret,
    operator,
    operator_deployment,
    operator_kubeconfig,
    pytest_runtest_makereport,
    s3_bucket,
    s3_endpoint,
)
