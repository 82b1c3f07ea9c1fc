"""The health check's tests reuse the operator fixtures (manifests/ applied for real)."""

from tests.operator.conftest import (  # noqa: F401  (fixtures, re-exported for pytest)
    crd_installed,
    operator,
    operator_deployment,
    pytest_runtest_makereport,
)
from tests.operator.test_operator import ingestions  # noqa: F401
