# The local environment's node, sourced by hack/testenv.sh: a network namespace of our own (as a
# kind node is a container), with containerd, the kubelet and kube-proxy inside it, and the
# teardown that puts back everything a kubelet changes on the host.
#
# Addresses (all inside namespaces this script makes; the node has no default route):
#   host side of the veth  10.201.0.1     node  10.201.0.2 (API server, Kafka, object stores)
#   pods                   10.202.0.0/24  on the bridge cni0 (gateway 10.202.0.1) in the node
#   Services               10.203.0.0/24  (kube-proxy's iptables rules, in the node)
# The host reaches pods and Services only through routes that point into the node.
# shellcheck shell=bash

NODE_NAME=csvkafka-node
NODE_NETNS=csvkafka-node
NODE_IP=10.201.0.2
HOST_IP=10.201.0.1
POD_CIDR=10.202.0.0/24
POD_GW=10.202.0.1
SVC_CIDR=10.203.0.0/24
SVC_APISERVER_IP=10.203.0.1
HOST_VETH=csvk-host
PAUSE_IMAGE=localhost/csvkafka-pause:3.10
# The kubelet sets these on every start; we put them back once the node is Ready and on teardown.
KUBELET_SYSCTLS="vm.overcommit_memory kernel.panic kernel.panic_on_oops"

# in_node CMD...: runs CMD in the node's network namespace. nsenter, not `ip netns exec`: the
# latter gives each call a mount namespace with a fresh sysfs, where the kubelet finds no
# cgroups and containerd cannot see the kubelet's volume mounts.
IN_NODE=(nsenter "--net=/run/netns/$NODE_NETNS")
in_node() { "${IN_NODE[@]}" "$@"; }

# host_paths_save: the host paths the node creates that did not exist before it (the kubelet,
# containerd's shims and the CNI plugins use them whatever our own directories are), so that
# teardown removes them and nothing else.
HOST_PATHS="/run/netns /var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/cni"
host_paths_save() {
  local f="$state/node/made.txt" p
  [ -f "$f" ] && return 0
  mkdir -p "$state/node"
  for p in $HOST_PATHS; do [ -e "$p" ] || echo "$p"; done >"$f"
}

netns_up() {
  host_paths_save
  [ -e "/run/netns/$NODE_NETNS" ] && return 0
  log "creating the node's network namespace $NODE_NETNS ($NODE_IP, pods $POD_CIDR, Services $SVC_CIDR)"
  ip netns add "$NODE_NETNS"
  ip link add "$HOST_VETH" type veth peer name eth0 netns "$NODE_NETNS"
  ip addr add "$HOST_IP/24" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  in_node ip link set lo up
  in_node ip addr add "$NODE_IP/24" dev eth0
  in_node ip link set eth0 up
  # The pod bridge exists, with its gateway address, before any server binds to it; the CNI
  # bridge plugin adopts it.
  in_node ip link add cni0 type bridge
  in_node ip addr add "$POD_GW/24" dev cni0
  in_node ip link set cni0 up
  # Forwarding inside the node only (host -> pod goes through it); the host's setting is untouched.
  in_node sysctl -qw net.ipv4.ip_forward=1
  ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_VETH"
  ip route add "$SVC_CIDR" via "$NODE_IP" dev "$HOST_VETH"
}

netns_down() {
  local ns
  # The pods' namespaces (cni-*) outlive a killed containerd.
  for ns in /run/netns/cni-*; do
    [ -e "$ns" ] && ip netns delete "$(basename "$ns")" 2>/dev/null || true
  done
  ip link delete "$HOST_VETH" 2>/dev/null || true  # takes its routes along
  [ -e "/run/netns/$NODE_NETNS" ] && ip netns delete "$NODE_NETNS"
  # `ip netns add` made /run/netns a mount point of its own, if it was not there before.
  if grep -qx /run/netns "$state/node/made.txt" 2>/dev/null && [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
    umount /run/netns 2>/dev/null || true
    rmdir /run/netns
  fi
  return 0
}

sysctls_save() {
  local f="$state/node/sysctls.before" k
  [ -f "$f" ] && return 0
  mkdir -p "$state/node"
  for k in $KUBELET_SYSCTLS; do echo "$k=$(sysctl -n "$k")"; done >"$f"
}

sysctls_restore() {
  local f="$state/node/sysctls.before" kv
  [ -f "$f" ] || return 0
  while read -r kv; do sysctl -qw "$kv" || true; done <"$f"
}

node_certs() {
  local d="$state/pki"
  [ -f "$d/kubelet.crt" ] && return 0
  (
    cd "$d"
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:nodes/CN=system:node:$NODE_NAME" \
      -keyout kubelet.key -out kubelet.csr 2>/dev/null
    openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out kubelet.crt 2>/dev/null
  )
}

# kubeconfig_for OUT USER CERT KEY: a kubeconfig for the API server at the node's address, which
# the host, the node's processes and port-forwards all reach. Written to a temporary file and
# renamed: concurrent `up`s must never expose a half file.
kubeconfig_for() {
  local out="$1" user="$2" crt="$3" key="$4" kc="$1.tmp.$$"
  cat >"$kc" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$state/pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$crt")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: testenv
  context: {cluster: testenv, user: $user}
current-context: testenv
EOF
  chmod 600 "$kc"
  mv -f "$kc" "$out"
}

containerd_start() {
  local d="$state/containerd"
  mkdir -p "$d" "$state/node/cni"
  cat >"$state/node/cni/10-csvkafka.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "csvkafka",
  "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": false,
    "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "$state/node/ipam",
      "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
      "routes": [{"dst": "$HOST_IP/32"}, {"dst": "$NODE_IP/32"}, {"dst": "$SVC_CIDR"}]
    }
  }]
}
EOF
  # No default route for pods either: only the node, the host's veth and Services are routed.
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: without this runc fails to lower oom_score_adj
  # ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroups v1 hybrid, no systemd: Debian's crun refuses the hybrid mode, runc works.
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/node/cni"
    max_conf_num = 1
EOF
  start containerd "${IN_NODE[@]}" containerd --config "$d/config.toml"
  wait_for "containerd" 60 test -S "$d/containerd.sock"
  wait_for "containerd's CRI" 60 "$bin/crictl" --runtime-endpoint "unix://$d/containerd.sock" info
}

ctr_() { ctr --address "$state/containerd/containerd.sock" -n k8s.io "$@"; }

# image_load REF ARCHIVE: imports an image archive into containerd unless it is there already.
image_load() {
  if ctr_ images ls -q | grep -qxF "$1"; then return 0; fi
  log "importing $1 into containerd"
  ctr_ images import "$2" >/dev/null
  # The CRI plugin registers an imported image a moment after the import returns.
  wait_for "$1 in containerd" 30 bash -c "ctr --address '$state/containerd/containerd.sock' -n k8s.io images ls -q | grep -qxF '$1'"
}

# pause_image: the sandbox image, built locally (no registry is reachable) from the pause.c of
# the same k8s.io/kubernetes module, as a static binary in an otherwise empty image.
pause_image() {
  local tar="$IMAGE_CACHE/pause.tar" src work
  if [ ! -f "$tar" ]; then
    src="$(cd "$here/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    work="$(mktemp -d)"
    gcc -Os -static -o "$work/pause" "$src"
    strip "$work/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$work/Containerfile"
    podman build -q --network none -t "$PAUSE_IMAGE" -f "$work/Containerfile" "$work" >/dev/null
    mkdir -p "$IMAGE_CACHE"
    podman save -q -o "$tar.tmp" "$PAUSE_IMAGE"
    mv "$tar.tmp" "$tar"
    rm -rf "$work"
  fi
  image_load "$PAUSE_IMAGE" "$tar"
}

kubelet_start() {
  local d="$state/node"
  mkdir -p "$d" "$state/kubelet" "$d/pod-logs"
  node_certs
  kubeconfig_for "$state/kubelet.kubeconfig" "system:node:$NODE_NAME" "$state/pki/kubelet.crt" "$state/pki/kubelet.key"
  echo "nameserver 127.0.0.1" >"$d/resolv.conf"  # pods never get the host's resolver
  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$state/containerd/containerd.sock
# This machine's cgroups are a v1 hybrid without systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# Root here cannot lower oom_score_adj below 0.
oomScoreAdj: 0
resolvConf: $d/resolv.conf
podLogsDir: $d/pod-logs
volumePluginDir: $state/kubelet/volume-plugins
serializeImagePulls: false
shutdownGracePeriod: 0s
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  sysctls_save
  start kubelet "${IN_NODE[@]}" "$bin/kubelet" --config "$d/kubelet.yaml" \
    --kubeconfig "$state/kubelet.kubeconfig" --root-dir "$state/kubelet" --cert-dir "$d/kubelet-pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
}

kube_proxy_start() {
  local d="$state/node"
  cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $POD_CIDR
clientConnection: {kubeconfig: $state/kubeconfig}
# Leave the global nf_conntrack settings alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
nodePortAddresses: [$NODE_IP/32]
EOF
  start kube-proxy "${IN_NODE[@]}" "$bin/kube-proxy" --config "$d/kube-proxy.yaml"
}

node_ready() {
  [ "$("$bin/kubectl" --kubeconfig "$state/kubeconfig" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# node_down: pods first (their shims outlive containerd), then the node's processes, then what
# they left on the host: mounts under the state dir, cgroups, the kubelet's host paths, sysctls.
node_down() {
  local sock="$state/containerd/containerd.sock" m cg f p
  stop kube-proxy
  stop kubelet
  if [ -S "$sock" ] && running containerd; then
    timeout 60 "$bin/crictl" --runtime-endpoint "unix://$sock" rmp -fa >/dev/null 2>&1 || true
  fi
  stop containerd
  # Shims started for our containerd (their command line names its socket).
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
  # Mounts under the state dir (volumes, overlay snapshots, sandbox shm), deepest first.
  if [ -d "$state" ]; then
    awk -v s="$state" '$5 == s || index($5, s "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  # Pod cgroups, deepest first, in every v1 hierarchy and the unified one.
  for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [ -f "$state/node/made.txt" ]; then
    while read -r p; do [ "$p" = /run/netns ] || rm -rf "$p"; done <"$state/node/made.txt"
  fi
  # The kubelet's container log links point into our state dir, if /var/log/containers stays.
  for f in /var/log/containers/*.log; do
    [ -L "$f" ] && case "$(readlink "$f")" in "$state"/*) rm -f "$f" ;; esac
  done
  sysctls_restore
  netns_down
}
