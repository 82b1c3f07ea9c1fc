#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl from their Go modules into a
# cache keyed by version, so later starts reuse them. Prints progress for each long step.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

bin="$KUBE_CACHE/bin"
mkdir -p "$bin"
export GOFLAGS="-buildvcs=false -mod=mod"

stamp() { date +%H:%M:%S; }

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=${KUBE_VERSION%%.*}"
  minor="${KUBE_VERSION#*.}"; ldflags+=" -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
done

for cmd in kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy; do
  if [ -x "$bin/$cmd" ]; then
    echo "[$(stamp)] $cmd v$KUBE_VERSION: cached"
    continue
  fi
  echo "[$(stamp)] building $cmd v$KUBE_VERSION (first time: several minutes)..."
  (cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
  mv "$bin/$cmd.tmp" "$bin/$cmd"
  echo "[$(stamp)] built $cmd"
done

if [ -x "$bin/etcd" ]; then
  echo "[$(stamp)] etcd v$ETCD_VERSION: cached"
else
  echo "[$(stamp)] building etcd v$ETCD_VERSION (first time: a minute or two)..."
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$bin/etcd.tmp" "$bin/etcd"
  echo "[$(stamp)] built etcd"
fi

# crictl talks to containerd's CRI: pods and containers as the kubelet sees them (fault tests
# kill containers with it).
if [ -x "$bin/crictl" ]; then
  echo "[$(stamp)] crictl v$CRICTL_VERSION: cached"
else
  echo "[$(stamp)] building crictl v$CRICTL_VERSION..."
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@v$CRICTL_VERSION"
  echo "[$(stamp)] built crictl"
fi
