# One image for the operator (python -m ingest_operator) and its workers
# (python -m ingest_worker.job_main; python -m ingest_worker for the command line).
#   docker build -t csv-kafka:0.1.0 .   dependencies from the package index
#   make image                          no Docker, no network: a local Debian base and a
#                                       wheelhouse built on the host (hack/build-image.sh)

# Both stages must use the same base: the virtualenv's python is a symlink to the base's.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- build: the virtualenv, from wheels -----------------------------------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# .dockerignore lets only the sources through, and wheelhouse/ when `make image` made one.
COPY . /src
# With a wheelhouse the install is offline (--no-index: a missing wheel fails here rather than
# reaching for the network); without one it resolves from the index as usual, and the compiled
# core (core/: Rust, librdkafka) is built here with a toolchain from rustup (a few minutes;
# only this stage has compilers). Then out go
# pip/setuptools, dependencies' own test suites and bytecode (the next step compiles what is
# imported); kubernetes/aio, an asyncio twin of the generated client (21 MB) that neither this
# project nor kopf imports (kept if the sources ever name it); and botocore's models of every
# AWS service (27 MB) but S3's and those of the credential chain (STS for web identity, SSO).
RUN set -eu; \
    if ls /src/wheelhouse/*.whl >/dev/null 2>&1; then \
      from="--no-index --find-links=/src/wheelhouse"; \
    else \
      apt-get update -q; \
      apt-get install -y -q --no-install-recommends build-essential curl ca-certificates \
        libssl-dev pkg-config perl; \
      curl -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal; \
      PATH="$HOME/.cargo/bin:$PATH" python3 -m pip wheel -q --wheel-dir /tmp/core /src/core; \
      from="--find-links=/tmp/core"; \
    fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-compile $from /src; \
    /opt/venv/bin/pip uninstall -y -q pip setuptools wheel; \
    rm -f /opt/venv/bin/activate* /opt/venv/bin/Activate.ps1; \
    find /opt/venv -depth -type d \
      \( -name __pycache__ -o \( \( -name tests -o -name test \) -path '*/site-packages/*/*' \) \) \
      -exec rm -rf {} +; \
    find /opt/venv -name '*.py[co]' -delete; \
    grep -rqE 'kubernetes(\.aio| import .*\baio\b)' /src/ingest_worker /src/operator \
      || rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio; \
    find /opt/venv/lib/python3*/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
      ! -name s3 ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} +
# Bytecode for the modules the operator and the worker import, and only those: the root
# filesystem is read-only, so without it every start compiles them again (2.1 s of the
# operator's start, 0.6 s of the worker's), and all of site-packages would add ~40 MB.
# Unchecked hashes: the sources in an image never change, and no stat is needed to trust them.
RUN /opt/venv/bin/python -c "\
import importlib, importlib.util, py_compile, sys; \
[importlib.import_module(m) for m in sys.argv[1:]]; \
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH; \
[py_compile.compile(f, cfile=importlib.util.cache_from_source(f), invalidation_mode=mode) \
 for f in {getattr(m, '__file__', None) or '' for m in list(sys.modules.values())} \
 if f.startswith('/opt/venv/') and f.endswith('.py')]" \
    ingest_operator.__main__ ingest_operator.handlers ingest_worker.job_main csvkafka_core \
    ingest_worker.run ingest_worker.sources ingest_worker.cli ingest_worker.verify \
    smart_open.s3 smart_open.gcs smart_open.azure smart_open.http

# --- run: the virtualenv only; no compilers, pip or caches -----------------------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="csv-kafka" \
      org.opencontainers.image.description="Kubernetes operator and worker that stream CSV files into Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent app
COPY --from=build /opt/venv /opt/venv
# The root filesystem is read-only in the cluster: no bytecode writes; scratch lives on /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT []
CMD ["python", "-m", "ingest_operator"]
