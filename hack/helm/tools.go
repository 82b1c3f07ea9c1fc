//go:build tools

// Package tools pins the helm that hack/build-helm.sh builds, to lint, render and install the
// chart in charts/.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
