//go:build tools

// Package tools pins the two Prometheus programs that hack/ builds from one Prometheus version:
// promtool (hack/build-promtool.sh), which checks rule files and runs their unit tests (`promtool
// test rules`) for tests/monitoring, and the Prometheus server (hack/build-prometheus.sh).
// Prometheus v3 is tagged v0.3xx.y as a Go module.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
