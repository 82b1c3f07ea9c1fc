//go:build tools

// Package tools pins the fake-gcs-server that hack/build-stores.sh builds.
package tools

import _ "github.com/fsouza/fake-gcs-server"
