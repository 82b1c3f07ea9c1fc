//go:build tools

// Package tools pins the Schema Registry that hack/build-registry.sh builds: AxonOps Schema
// Registry, which speaks Confluent's REST API, with in-memory storage.
package tools

import _ "github.com/axonops/axonops-schema-registry/cmd/schema-registry"
