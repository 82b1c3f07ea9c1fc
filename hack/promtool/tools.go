//go:build tools

// Package tools pins the promtool that hack/build-promtool.sh builds: Prometheus's own
// command-line tool, which checks rule files and runs their unit tests (`promtool test rules`)
// for tests/monitoring. Prometheus v3 is tagged v0.3xx.y as a Go module.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
