# Pinned versions of the local environment's components, and where their builds are cached.
# Sourced by the hack/ scripts. The cache lives outside the repository so clones share it.
KUBE_VERSION=1.37.2
ETCD_VERSION=3.6.16
KAFKA_VERSION=4.3.1
SCALA_VERSION=2.13
CACHE_ROOT="${CSVKAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/csvkafka}"
KUBE_CACHE="$CACHE_ROOT/kube-v$KUBE_VERSION-etcd-v$ETCD_VERSION"
KAFKA_CACHE="$CACHE_ROOT/kafka-$KAFKA_VERSION"
AZURITE_VERSION=3.35.0
STORES_CACHE="$CACHE_ROOT/stores"
CRICTL_VERSION=1.37.0
IMAGE_CACHE="$CACHE_ROOT/image"
REGISTRY_CACHE="$CACHE_ROOT/registry"
TOXIPROXY_CACHE="$CACHE_ROOT/toxiproxy"
HELM_CACHE="$CACHE_ROOT/helm"
