"""Fault injection reuses the operator's integration fixtures: the CRD and RBAC from manifests/,
the operator as a subprocess with its own ServiceAccount's token."""

from tests.operator.conftest import (  # noqa: F401  (fixtures, re-exported for pytest)
    crd_installed,
    operator,
    operator_kubeconfig,
    pytest_runtest_makereport,
)
from tests.operator.test_operator import ingestions  # noqa: F401
