"""The optional monitoring component (manifests/monitoring): its alerts in ``promtool test
rules``, and its PodMonitors and PrometheusRule against prometheus-operator's CRDs."""
