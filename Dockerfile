# The gcpcall-operator image: the locked runtime dependencies (requirements.txt, exported
# from uv.lock by `make lock`) and a wheel built from this repository, installed into a
# virtualenv, compiled to bytecode, and copied onto a slim Python. It runs as a numeric
# non-root user on a read-only root filesystem (the Helm chart mounts /tmp).
#
#   docker build -t gcpcall-operator .
#   docker run --rm gcpcall-operator --help

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The lock first, in its own layer (it changes less often than the code). Every file is
# checked against the lock's hashes; nothing is resolved (--no-deps) or built from source
# (--only-binary: a build would fetch unlocked build tools). So the image holds exactly the
# locked runtime set, tzdata included (the operator checks time zones against the IANA
# database, which slim images lack).
COPY requirements.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps --require-hashes --only-binary=:all: -r requirements.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY crds/ crds/
# The project's own wheel, without dependencies; `pip check` fails the build if the lock
# does not satisfy the wheel's requirements. Bytecode is compiled here, unchecked: the image
# is immutable and the root filesystem read-only, so nothing is compiled (or written) at
# run time.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

FROM python:3.11-slim
LABEL org.opencontainers.image.title="gcpcall-operator" \
      org.opencontainers.image.description="ScheduledGcpCall and GcpTask: Google Cloud API calls from Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
# 8080: kopf's liveness endpoint (/healthz), 9090: Prometheus metrics
EXPOSE 8080 9090
ENTRYPOINT ["gcpcall-operator", "run"]
