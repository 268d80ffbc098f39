# The service's image: CPython 3.11 (the version the test suite runs on) on Debian 12 slim.
# Dependencies come from uv.lock (`uv sync --locked`); the runtime stage has no build tools
# and runs as an unprivileged user. Migrations are NOT run on start: run them once per
# release (`docker compose run --rm migrate`, or the Kubernetes Job in deploy/k8s), never
# from every replica.
# tests/deploy/test_image_recipe.py runs the same install and start commands in a clean
# directory; keep the two in step.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-default-groups --no-install-project
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
COPY web ./web
RUN uv sync --locked --no-default-groups

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /app /app
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production
USER 10001:10001
EXPOSE 8000
# Ready = the database answers and its schema is current (503 while draining on SIGTERM).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health/ready', timeout=4)"]
# SIGTERM drains (SHUTDOWN_DRAIN_SECONDS) and lets streams finish (SHUTDOWN_GRACE_SECONDS):
# give `docker stop` a longer timeout than the grace (compose.yaml sets stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--no-access-log"]
