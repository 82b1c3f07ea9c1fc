// The Argo CD health-check harness: runs a resource_customizations health.lua in gopher-lua,
// the interpreter Argo CD uses, the way Argo CD runs it (see main.go).
module csvkafka.local/hack/argocd-health

go 1.26.0

// gopher-lua at the version Argo CD's go.mod pins.
require (
	github.com/yuin/gopher-lua v1.1.2
	sigs.k8s.io/yaml v1.6.0
)

require go.yaml.in/yaml/v2 v2.4.2 // indirect
