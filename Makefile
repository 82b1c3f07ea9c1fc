# The two commands a newcomer needs: `make demo` and `make test`. Both do their own set-up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup core system-deps testenv-up testenv-down testenv-status demo test test-fast lint crds chart bench bench-pod-start bench-bad-rows scale-bench soak load image

# The compiled core (core/, Rust) is built into a cached wheel first: pip finds it there.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --find-links "$$(dirname "$$(bash hack/build-core.sh)")" -e '.[dev]'
	touch $@

# Rebuilds and reinstalls the core when core/ changed (seconds when only its sources did).
core: $(VENV)/.installed
	bash hack/build-core.sh $(VENV) >/dev/null

# Debian packages the environment and the benchmark use: the node's runtime (containerd, runc,
# the CNI plugins, iptables for kube-proxy), the image tools (podman, mmdebstrap) and kcat (the
# C baseline of the benchmark), and what the compiled core links (OpenSSL's headers).
DEBS := kcat openssl libssl-dev pkg-config default-jre-headless containerd runc containernetworking-plugins iptables \
	conntrack iproute2 podman buildah skopeo conmon fuse-overlayfs uidmap mmdebstrap \
	golang-github-containers-common
DEB_CMDS := kcat openssl java containerd runc iptables conntrack ip podman mmdebstrap
system-deps:
	@for c in $(DEB_CMDS); do command -v $$c >/dev/null || missing=1; done; \
	  [ -d /usr/lib/cni ] || missing=1; [ -f /usr/include/openssl/ssl.h ] || missing=1; \
	  [ -z "$$missing" ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends $(DEBS); }

setup: system-deps $(VENV)/.installed core

testenv-up: setup
	bash hack/testenv.sh up

testenv-down:
	bash hack/testenv.sh down

testenv-status:
	bash hack/testenv.sh status

demo: testenv-up
	$(PY) hack/demo.py

# The tools only tests use build in the background meanwhile (hack/build-tools.sh).
test: testenv-up
	@mkdir -p .testenv/logs && (nice -n 19 bash hack/build-tools.sh >.testenv/logs/build-tools.log 2>&1 &)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

crds: setup
	$(PY) -m ingest_operator.crdgen > crds/csvingestion.yaml

# The Helm chart, generated from manifests/ (run after changing them, or the CRDs).
chart: setup
	source hack/versions.sh && bash hack/build-kube.sh >/dev/null && \
	  $(PY) hack/chart.py "$$KUBE_CACHE/bin/kubectl"

bench: testenv-up
	$(PY) bench/bench.py

# Scale-out at full size (issue 12): the tests/scale scenarios with 1,000 files and a 1 GB
# file in 4 shards, then 1, 2 and 4 shards of one file side by side (bench/scale.py).
scale-bench: testenv-up
	CSVKAFKA_SCALE_FILES=1000 CSVKAFKA_SCALE_SHARD_BYTES=268435456 \
	  CSVKAFKA_SCALE_FILE_BYTES=1072693248 $(VENV)/bin/pytest -s tests/scale
	$(PY) bench/scale.py --rows 4000000

# apply -> first row produced, on the local node (5 runs, by step).
bench-pod-start: testenv-up
	$(PY) bench/pod_start.py

# A clean file and the same rows 90% bad (dead-lettered, then counted only), side by side
# (bench/bad_rows.py; a pod runs 400k of them in CI: tests/faults/test_bad_rows.py).
bench-bad-rows: testenv-up
	$(PY) bench/bad_rows.py

# A 20-minute ingestion held at a broker quota: the worker's RSS, open fds and threads every
# 10 s, their slopes, and the verifier (bench/soak.py; CI runs 2 minutes: tests/faults/test_soak.py).
soak: testenv-up
	$(PY) bench/soak.py --minutes 20

# 200 CsvIngestions applied at once, then 1,000 (bench/load.py; CI runs 20: tests/faults/test_load.py).
# The 1,000 run's exit status is ignored: its figures are the report of what breaks first.
load: testenv-up
	$(PY) bench/load.py --count 200
	-$(PY) bench/load.py --count 1000

# The project's image, built with podman from a local Debian base and a host-side wheelhouse
# (no Docker, no registry, no network in the build). Prints the image reference last.
image:
	bash hack/build-image.sh
