"""Fixtures for the monitoring tests that run an ingestion: the operator's (re-exported)."""

from tests.operator.conftest import (  # noqa: F401  (fixtures, re-exported for pytest)
    crd_installed,
    operator,
    operator_deployment,
    operator_kubeconfig,
    pytest_runtest_makereport,
)
from tests.operator.test_operator import ingestions  # noqa: F401
