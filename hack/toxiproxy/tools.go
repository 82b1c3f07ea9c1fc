//go:build tools

// Package tools pins the fault-injecting TCP proxy that hack/build-toxiproxy.sh builds: Shopify's
// Toxiproxy, between the worker and the broker (and the object store) in the fault scenarios.
package tools

import _ "github.com/Shopify/toxiproxy/v2/cmd/server"
