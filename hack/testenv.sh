#!/usr/bin/env bash
# The local environment: one Kubernetes node in a network namespace of its own (hack/node.sh),
# holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, the kubelet,
# kube-proxy, an Apache Kafka broker (KRaft), a Schema Registry and the object stores, with the
# operator installed as its Deployment from the image built from this tree. Data in .testenv/
# (throwaway).
#
#   hack/testenv.sh up [all|kafka|kube|stores]   build what is missing (cached), start, wait until ready
#   hack/testenv.sh down                  stop everything, remove the data, put the host back
#   hack/testenv.sh status                which components run
#   hack/testenv.sh kafka-stop|kafka-start|apiserver-stop|apiserver-start   (fault injection)
#   hack/testenv.sh operator-install      (re)installs the operator Deployment from this tree's image
#
# Afterwards `source .testenv/env` gives KUBECONFIG, KAFKA_BOOTSTRAP_SERVERS, PATH (kubectl,
# crictl) and CONTAINER_RUNTIME_ENDPOINT.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"
# shellcheck source=hack/node.sh
source "$here/node.sh"

state="${CSVKAFKA_TESTENV:-$root/.testenv}"
bin="$KUBE_CACHE/bin"
python="${PYTHON:-$root/.venv/bin/python}"

ETCD_PORT=32379
ETCD_PEER_PORT=32380
APISERVER_PORT=36443
KCM_PORT=30257
SCHEDULER_PORT=30259
KAFKA_PORT=39092
KAFKA_CONTROLLER_PORT=39093
KAFKA_SASL_PORT=39094    # SASL/SCRAM-SHA-512 over TLS
KAFKA_MTLS_PORT=39095    # mutual TLS
# The network fault scenarios' path: a listener advertised at Toxiproxy's address (clients
# reconnect to what the broker advertises, so the proxy is never bypassed), and the S3 store
# behind the same proxy.
KAFKA_PROXIED_PORT=39096
KAFKA_PROXY_PORT=39196
S3_PROXY_PORT=35100
TOXIPROXY_PORT=38474
# The secured listeners' one SCRAM user (throwaway, local); the mTLS principal is the client
# certificate's CN (hack/kafka_pki.py).
KAFKA_USER=ingest
KAFKA_PASSWORD=csvkafka-Kafka-Passw0rd
S3_PORT=35000
GCS_PORT=34443
AZURE_PORT=30100
PROMETHEUS_PORT=39090
REGISTRY_PORT=38081
REGISTRY_AUTH_PORT=38082
# The secured registry's one user (throwaway, local): the tests give it to workers in a Secret.
REGISTRY_USER=ingest
REGISTRY_PASSWORD=csvkafka-Passw0rd
# Azurite's well-known development account (public, documented by Microsoft).
AZURE_ACCOUNT=devstoreaccount1
AZURE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

log() { echo "[$(date +%H:%M:%S)] $*"; }

pidfile() { echo "$state/run/$1.pid"; }

running() {
  local f
  f="$(pidfile "$1")"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# start NAME CMD...: runs CMD (usually `in_node ...`) in its own session (so `stop` can take its whole group) with its
# output in .testenv/logs/NAME.log.
start() {
  local name="$1"; shift
  if running "$name"; then return 0; fi
  mkdir -p "$state/run" "$state/logs"
  setsid "$@" >>"$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$(pidfile "$name")"
}

stop() {
  local name="$1" f pid i
  f="$(pidfile "$name")"
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local what="$1" secs="$2" i; shift 2
  for i in $(seq 1 $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "timed out after ${secs}s waiting for $what; logs in $state/logs/" >&2
  return 1
}

# port_open PORT: something listens on the node's address (seen from the host).
port_open() { (exec 3<>"/dev/tcp/$NODE_IP/$1") 2>/dev/null; }

certs() {
  local d="$state/pki"
  [ -f "$d/admin.crt" ] && return 0
  mkdir -p "$d"
  log "generating certificates and the service-account signing key"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=csvkafka-testenv-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    cat >server.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:$SVC_APISERVER_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout server.key -out server.csr 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
    echo "extendedKeyUsage=clientAuth" >client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=testenv-admin" \
      -keyout admin.key -out admin.csr 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

kubeconfig() {
  kubeconfig_for "$state/kubeconfig" admin "$state/pki/admin.crt" "$state/pki/admin.key"
}

write_env() {
  cat >"$state/env.tmp.$$" <<EOF
export KUBECONFIG="$state/kubeconfig"
export KAFKA_BOOTSTRAP_SERVERS="$NODE_IP:$KAFKA_PORT"
export CSVKAFKA_KAFKA_SASL_BOOTSTRAP="$NODE_IP:$KAFKA_SASL_PORT"
export CSVKAFKA_KAFKA_MTLS_BOOTSTRAP="$NODE_IP:$KAFKA_MTLS_PORT"
export CSVKAFKA_KAFKA_USER="$KAFKA_USER"
export CSVKAFKA_KAFKA_PASSWORD="$KAFKA_PASSWORD"
export CSVKAFKA_KAFKA_PKI="$state/kafka/pki"
export CSVKAFKA_TOXIPROXY_URL="http://$NODE_IP:$TOXIPROXY_PORT"
export CSVKAFKA_KAFKA_PROXIED_BOOTSTRAP="$NODE_IP:$KAFKA_PROXY_PORT"
export CSVKAFKA_S3_PROXIED_ENDPOINT="http://$NODE_IP:$S3_PROXY_PORT"
export CSVKAFKA_TESTENV="$state"
export CSVKAFKA_KAFKA_LIBS="$KAFKA_CACHE/libs"
export CSVKAFKA_S3_ENDPOINT="http://$NODE_IP:$S3_PORT"
export CSVKAFKA_GCS_ENDPOINT="http://$NODE_IP:$GCS_PORT"
export CSVKAFKA_AZURE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=$AZURE_ACCOUNT;AccountKey=$AZURE_KEY;BlobEndpoint=http://$NODE_IP:$AZURE_PORT/$AZURE_ACCOUNT;"
export CSVKAFKA_NODE_NETNS="$NODE_NETNS"
export CSVKAFKA_NODE_IP="$NODE_IP"
export CSVKAFKA_PROMETHEUS_URL="http://$NODE_IP:$PROMETHEUS_PORT"
export CSVKAFKA_SCHEMA_REGISTRY_URL="http://$NODE_IP:$REGISTRY_PORT"
export CSVKAFKA_SCHEMA_REGISTRY_AUTH_URL="http://$NODE_IP:$REGISTRY_AUTH_PORT"
export CSVKAFKA_SCHEMA_REGISTRY_AUTH_USER="$REGISTRY_USER"
export CSVKAFKA_SCHEMA_REGISTRY_AUTH_PASSWORD="$REGISTRY_PASSWORD"
export CSVKAFKA_IMAGE="$(cat "$state/image" 2>/dev/null)"
export CONTAINER_RUNTIME_ENDPOINT="unix://$state/containerd/containerd.sock"
export PATH="$bin:$root/.venv/bin:\$PATH"
EOF
  mv -f "$state/env.tmp.$$" "$state/env"
}

start_etcd() {
  start etcd "${IN_NODE[@]}" "$bin/etcd" --name testenv --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "testenv=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "http://127.0.0.1:32381" \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 --log-level=warn
}

# The audit policy: every request of the operator's and the workers' service accounts, at
# Metadata level (who, what, when, the answer's code; no bodies), so the tests can tell which
# operator replica wrote (user.extra holds the pod's name) and count requests and 429s.
audit_policy() {
  cat >"$state/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None  # the controllers (kube-controller-manager runs each as its own account)
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
EOF
}

apiserver_start() {
  audit_policy
  # Node and RBAC authorization, a service-account issuer, the PodSecurity admission (on by
  # default) so the restricted level can be enforced per namespace, and the kubelet reached at
  # the node's address for logs and exec. The default endpoint reconciler points the
  # `kubernetes` Service at the node's address.
  start kube-apiserver "${IN_NODE[@]}" "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --cert-dir "$state/pki" \
    --tls-cert-file "$state/pki/server.crt" --tls-private-key-file "$state/pki/server.key" \
    --client-ca-file "$state/pki/ca.crt" \
    --authorization-mode Node,RBAC --anonymous-auth=false \
    --kubelet-client-certificate "$state/pki/admin.crt" --kubelet-client-key "$state/pki/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$state/pki/sa.pub" \
    --service-account-signing-key-file "$state/pki/sa.key" \
    --api-audiences https://kubernetes.default.svc \
    --service-cluster-ip-range "$SVC_CIDR" \
    --allow-privileged=true \
    --storage-backend etcd3 \
    --audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$state/logs/audit.log" \
    --audit-log-format json --audit-log-maxsize 200 --audit-log-maxbackup 2 \
    --profiling=false
  wait_for "kube-apiserver" 90 "$bin/kubectl" --kubeconfig "$state/kubeconfig" get --raw /readyz
}

start_kcm() {
  # nodeipam is off: the pod CIDR is the CNI config's, not the Node's.
  start kube-controller-manager "${IN_NODE[@]}" "$bin/kube-controller-manager" \
    --kubeconfig "$state/kubeconfig" \
    --authentication-kubeconfig "$state/kubeconfig" --authorization-kubeconfig "$state/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --leader-elect=false \
    --service-account-private-key-file "$state/pki/sa.key" \
    --root-ca-file "$state/pki/ca.crt" \
    --cluster-signing-cert-file "$state/pki/ca.crt" --cluster-signing-key-file "$state/pki/ca.key" \
    --controllers '*,-nodeipam' \
    --concurrent-job-syncs 10 --concurrent-gc-syncs 10
}

start_scheduler() {
  start kube-scheduler "${IN_NODE[@]}" "$bin/kube-scheduler" \
    --kubeconfig "$state/kubeconfig" \
    --authentication-kubeconfig "$state/kubeconfig" --authorization-kubeconfig "$state/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false
}

# kafka_start: writes the broker's configuration (at every start, so a change here applies at
# the next kafka-start), formats the data directory the first time, and starts the broker.
kafka_start() {
  local cfg="$state/kafka/server.properties" pki="$state/kafka/pki"
  if running kafka; then return 0; fi
  mkdir -p "$state/kafka/data"
  "$python" "$here/kafka_pki.py" "$pki" "$NODE_IP"
  # Kafka's defaults otherwise (message.max.bytes 1 MB, ...), as a user's cluster runs, except
  # auto.create.topics.enable, true by default: production clusters turn it off, so here too a
  # missing topic fails the ingestion (unless spec.kafka.createTopics asks to create it).
  # Besides PLAINTEXT, the two secured listeners a production cluster has: SASL/SCRAM over TLS
  # and mutual TLS, with ACLs (StandardAuthorizer). The anonymous principal of PLAINTEXT and
  # the controller is a super user, and a topic without ACLs is open to all, so the tests that
  # do not ask for security see none; a test that puts ACLs on its topic gets them enforced.
  cat >"$cfg" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$NODE_IP:$KAFKA_PORT,SASL_SSL://$NODE_IP:$KAFKA_SASL_PORT,SSL://$NODE_IP:$KAFKA_MTLS_PORT,PROXIED://$NODE_IP:$KAFKA_PROXIED_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$NODE_IP:$KAFKA_PORT,SASL_SSL://$NODE_IP:$KAFKA_SASL_PORT,SSL://$NODE_IP:$KAFKA_MTLS_PORT,PROXIED://$NODE_IP:$KAFKA_PROXY_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,PROXIED:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$pki/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$pki/ca.crt
listener.name.ssl.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+)\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=true
log.dirs=$state/kafka/data
num.partitions=6
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
log.segment.bytes=268435456
EOF
  if [ ! -f "$state/kafka/data/meta.properties" ]; then
    local id
    id="$(java -cp "$KAFKA_CACHE/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    java -cp "$KAFKA_CACHE/libs/*" kafka.tools.StorageTool format -t "$id" -c "$cfg" \
      --add-scram "SCRAM-SHA-512=[name=$KAFKA_USER,password=$KAFKA_PASSWORD]" >"$state/logs/kafka-format.log" 2>&1
  fi
  cat >"$state/kafka/log4j2.yaml" <<EOF
Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
    Logger: [{name: kafka.server.KafkaServer, level: INFO}, {name: kafka.server.KafkaRaftServer, level: INFO}]
EOF
  start kafka "${IN_NODE[@]}" java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/kafka/log4j2.yaml" \
    -cp "$KAFKA_CACHE/libs/*" kafka.Kafka "$cfg"
  wait_for "kafka" 90 port_open "$KAFKA_PORT"
}

# toxiproxy_start: Toxiproxy (hack/build-toxiproxy.sh) in the node's namespace, with two proxies
# the fault scenarios put toxics on: "kafka" to the broker's PROXIED listener, "s3" to moto.
toxiproxy_start() {
  local tp cfg="$state/toxiproxy.json"
  tp="$(bash "$here/build-toxiproxy.sh" | tail -1)"
  cat >"$cfg" <<EOF
[
  {"name": "kafka", "listen": "$NODE_IP:$KAFKA_PROXY_PORT", "upstream": "$NODE_IP:$KAFKA_PROXIED_PORT", "enabled": true},
  {"name": "s3", "listen": "$NODE_IP:$S3_PROXY_PORT", "upstream": "$NODE_IP:$S3_PORT", "enabled": true}
]
EOF
  start toxiproxy "${IN_NODE[@]}" "$tp" -host "$NODE_IP" -port "$TOXIPROXY_PORT" -config "$cfg"
  wait_for "toxiproxy" 30 port_open "$TOXIPROXY_PORT"
}

stores_start() {
  mkdir -p "$state/gcs" "$state/azurite"
  start moto "${IN_NODE[@]}" "$root/.venv/bin/moto_server" -H "$NODE_IP" -p "$S3_PORT"
  start fake-gcs-server "${IN_NODE[@]}" "$STORES_CACHE/bin/fake-gcs-server" -scheme http -host "$NODE_IP" \
    -port "$GCS_PORT" -public-host "$NODE_IP:$GCS_PORT" -external-url "http://$NODE_IP:$GCS_PORT" \
    -backend filesystem -filesystem-root "$state/gcs" -log-level warn
  start azurite "${IN_NODE[@]}" "$(command -v node)" "$STORES_CACHE/azurite-$AZURITE_VERSION/node_modules/azurite/dist/src/blob/main.js" \
    --blobHost "$NODE_IP" --blobPort "$AZURE_PORT" --location "$state/azurite" --skipApiVersionCheck --loose --silent
  wait_for "moto (S3)" 60 port_open "$S3_PORT"
  wait_for "fake-gcs-server" 60 port_open "$GCS_PORT"
  wait_for "azurite" 60 port_open "$AZURE_PORT"
}

# registry_start: the Schema Registry (hack/build-registry.sh, Confluent's REST API) in the node's
# namespace, in memory: a fresh registry with every environment. A second one asks for basic
# auth (one user, made at its start), for the tests of credentials.
registry_start() {
  local sr
  sr="$(bash "$here/build-registry.sh" | tail -1)"
  start schema-registry "${IN_NODE[@]}" env SCHEMA_REGISTRY_HOST="$NODE_IP" \
    SCHEMA_REGISTRY_PORT="$REGISTRY_PORT" SCHEMA_REGISTRY_STORAGE_TYPE=memory "$sr"
  cat >"$state/registry-auth.yaml" <<EOF
server: {host: $NODE_IP, port: $REGISTRY_AUTH_PORT}
storage: {type: memory}
security: {auth: {enabled: true, methods: [basic]}}
EOF
  start schema-registry-auth "${IN_NODE[@]}" env SCHEMA_REGISTRY_BOOTSTRAP_ENABLED=true \
    SCHEMA_REGISTRY_BOOTSTRAP_USERNAME="$REGISTRY_USER" \
    SCHEMA_REGISTRY_BOOTSTRAP_PASSWORD="$REGISTRY_PASSWORD" "$sr" -config "$state/registry-auth.yaml"
  wait_for "schema registry" 60 port_open "$REGISTRY_PORT"
  wait_for "schema registry (basic auth)" 60 port_open "$REGISTRY_AUTH_PORT"
}

# prometheus_start: a Prometheus server (hack/build-prometheus.sh) in the node's namespace that
# scrapes the operator and the worker pods as manifests/monitoring's PodMonitors tell a
# prometheus-operator to: pods found through the API server, the container port named
# `metrics`, the `namespace`, `pod`, `ingestion` and `run` labels, `job` the pod's
# app.kubernetes.io/name (empty labels are dropped: the operator's pod has no run); the
# operator's own labels win (its per-ingestion series carry their namespace). Every
# second: the worker pods of a short test live a few seconds.
prometheus_start() {
  local prom app dir="$state/prometheus"
  prom="$(bash "$here/build-prometheus.sh" | tail -1)"
  mkdir -p "$dir/data"
  {
    printf 'global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n'
    for app in csvkafka-operator csv-ingest-worker; do
      cat <<JOB
  - job_name: $app
    honor_labels: $([ "$app" = csvkafka-operator ] && echo true || echo false)
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: $state/kubeconfig
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
        regex: $app
        action: keep
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: metrics
        action: keep
      - source_labels: [__meta_kubernetes_pod_phase]
        regex: Running
        action: keep
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_label_csvkafka_io_ingestion]
        target_label: ingestion
      - source_labels: [__meta_kubernetes_pod_label_csvkafka_io_run]
        target_label: run
JOB
    done
  } >"$dir/prometheus.yml"
  start prometheus "${IN_NODE[@]}" "$prom" --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/data" --web.listen-address="$NODE_IP:$PROMETHEUS_PORT" \
    --storage.tsdb.retention.time=1d
  wait_for "prometheus" 60 port_open "$PROMETHEUS_PORT"
}

# image_up: builds this tree's image (cached by a hash of its sources) and loads it, with the
# pause image, into containerd.
image_up() {
  local ref
  ref="$(bash "$here/build-image.sh" | tail -1)"
  pause_image
  image_load "$ref" "$IMAGE_CACHE/csv-kafka-${ref##*:}.tar"
  echo "$ref" >"$state/image"
}

# operator_install: the operator as its Deployment, from manifests/ through a local overlay that
# sets only what differs here: the image built from this tree.
operator_install() {
  local ref overlay="$state/overlay"
  ref="$(cat "$state/image")"
  mkdir -p "$overlay"
  cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$overlay" "$root/manifests")
images:
  - name: csv-kafka
    newName: ${ref%:*}
    newTag: "${ref##*:}"  # quoted: a tag of digits only would be a YAML number
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: csvkafka-operator, namespace: csvkafka-system}
      spec:
        template:
          spec:
            containers:
              - name: operator
                env:
                  - {name: CSVKAFKA_WORKER_IMAGE, value: "$ref"}
EOF
  log "installing the operator Deployment ($ref)"
  kubectl_ apply --server-side --force-conflicts -k "$overlay" >/dev/null
  kubectl_ -n csvkafka-system rollout status deploy/csvkafka-operator --timeout=180s
}

kubectl_() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

up() {
  local what="${1:-all}" t0=$SECONDS
  mkdir -p "$state/logs" "$state/run"
  case "$what" in all|kube)
    bash "$here/build-kube.sh"
  esac
  certs
  kubeconfig
  netns_up
  case "$what" in all|kafka)
    bash "$here/build-kafka.sh"
    log "starting kafka $KAFKA_VERSION (KRaft) on $NODE_IP:$KAFKA_PORT"
    kafka_start
    log "starting the schema registry on $NODE_IP:$REGISTRY_PORT"
    registry_start
    log "starting toxiproxy on $NODE_IP:$TOXIPROXY_PORT (kafka :$KAFKA_PROXY_PORT, s3 :$S3_PROXY_PORT)"
    toxiproxy_start
  esac
  case "$what" in all|stores)
    bash "$here/build-stores.sh"
    log "starting object stores: moto (S3) :$S3_PORT, fake-gcs-server :$GCS_PORT, azurite :$AZURE_PORT"
    stores_start
  esac
  case "$what" in all|kube)
    log "starting etcd $ETCD_VERSION and kube-apiserver $KUBE_VERSION on $NODE_IP:$APISERVER_PORT"
    start_etcd
    wait_for "etcd" 30 in_node bash -c "exec 3<>/dev/tcp/127.0.0.1/$ETCD_PORT"
    apiserver_start
    log "starting kube-controller-manager, kube-scheduler and containerd"
    start_kcm
    start_scheduler
    containerd_start
    image_up
    log "starting the kubelet and kube-proxy (node $NODE_NAME)"
    kubelet_start
    kube_proxy_start
    wait_for "node $NODE_NAME Ready" 120 node_ready
    sysctls_restore
    wait_for "the default ServiceAccount" 60 kubectl_ -n default get serviceaccount default
    operator_install
    log "starting prometheus on $NODE_IP:$PROMETHEUS_PORT"
    prometheus_start
  esac
  write_env
  log "ready in $((SECONDS - t0))s: source $state/env"
}

down() {
  local name
  [ -d "$state" ] || { netns_down; return 0; }
  node_down
  for name in prometheus kube-scheduler kube-controller-manager kube-apiserver etcd schema-registry schema-registry-auth toxiproxy kafka moto fake-gcs-server azurite; do
    stop "$name"
  done
  node_down  # again: anything the control plane started while the node stopped
  rm -rf "$state"
  log "testenv stopped and removed"
}

status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy kafka schema-registry schema-registry-auth toxiproxy moto fake-gcs-server azurite prometheus; do
    if running "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"))"; else echo "$name: stopped"; fi
  done
  memory
}

# memory: the resident memory of every process in the node's and the pods' network namespaces,
# which is the whole environment (servers, shims, containers).
memory() {
  local ns inodes="" p n total=0 count=0 rss
  for ns in "/run/netns/$NODE_NETNS" /run/netns/cni-*; do
    [ -e "$ns" ] && inodes+=" $(stat -L -c %i "$ns") "
  done
  [ -n "$inodes" ] || return 0
  for p in /proc/[0-9]*; do
    n="$(stat -L -c %i "$p/ns/net" 2>/dev/null)" || continue
    case "$inodes" in *" $n "*) ;; *) continue ;; esac
    rss="$(awk '/^VmRSS:/ {print $2}' "$p/status" 2>/dev/null)"
    [ -n "$rss" ] || continue
    total=$((total + rss)); count=$((count + 1))
  done
  echo "memory: $((total / 1024)) MiB resident in $count processes (node and pods)"
}

case "${1:-}" in
  up) up "${2:-all}" ;;
  down) down ;;
  status) status ;;
  kafka-stop) stop kafka ;;
  kafka-start) kafka_start ;;
  apiserver-stop) stop kube-apiserver ;;
  apiserver-start) apiserver_start ;;
  operator-install) image_up && operator_install ;;
  *) echo "usage: $0 up [all|kafka|kube|stores] | down | status | kafka-stop | kafka-start | apiserver-stop | apiserver-start | operator-install" >&2; exit 2 ;;
esac
