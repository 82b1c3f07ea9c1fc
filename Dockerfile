# One image for the operator (python -m ingest_operator) and its workers
# (python -m ingest_worker.job_main; python -m ingest_worker for the command line).
#   docker build -t csv-kafka:0.1.0 .

# --- build: wheels of the project and its dependencies --------------------------------------
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest_worker ./ingest_worker
COPY operator ./operator
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip uninstall -y pip \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# --- run: the virtualenv only, no compilers or pip caches -----------------------------------
FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="csv-kafka" \
      org.opencontainers.image.description="Kubernetes operator and worker that stream CSV files into Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent app
COPY --from=build /opt/venv /opt/venv
# The root filesystem is read-only in the cluster: no bytecode writes; scratch lives on /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT []
CMD ["python", "-m", "ingest_operator"]
