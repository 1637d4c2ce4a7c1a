# syntax=docker/dockerfile:1
# One image runs any Corral service, or the Ollama simulator, by its module name:
#   docker run IMAGE services.cache        docker run IMAGE sim --host 0.0.0.0 --port 11434
# NOTE: the base is pinned by version tag. Pin it by digest too (python:3.11.14-slim-bookworm@sha256:…)
# where an engine can resolve one; the development machines have none. Both stages use the same base so
# the virtual environment's interpreter symlinks stay valid when it is copied across.
# NOTE: tests/deploy/test_image.py replays the builder stage's ENV, WORKDIR, COPY and RUN lines and
# starts every service from the result: keep the builder to those instructions, with relative paths and
# $VENV only.

FROM python:3.11.14-slim-bookworm AS builder
ENV VENV=/opt/corral \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, in their own layer: every package pinned (requirements/runtime.txt is generated from
# pyproject.toml by scripts/lock_requirements.py), wheels only, nothing resolved at build time.
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv "$VENV" \
 && "$VENV/bin/pip" install --no-cache-dir --no-deps --only-binary=:all: -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY gen/python gen/python
COPY services services
COPY sim sim
COPY devstack devstack
RUN "$VENV/bin/pip" wheel --no-cache-dir --no-deps --wheel-dir dist . \
 && "$VENV/bin/pip" install --no-cache-dir --no-deps --no-index dist/corral-*.whl \
 && "$VENV/bin/pip" check

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 corral \
 && useradd --system --uid 10001 --gid corral --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin corral
COPY --from=builder /opt/corral /opt/corral
ENV PATH=/opt/corral/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
# router gRPC + HTTP, cache, health, prewarm; metrics ports are set in the configuration.
EXPOSE 50051 11400 50052 50053 50054
ENTRYPOINT ["python", "-m"]
CMD ["services.router"]
