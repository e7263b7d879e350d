# syntax=docker/dockerfile:1.7
# One image for every Gatherly service: `gatherly run <service>` (distributed mode, one service per container),
# `gatherly migrate <service>` (the migration Jobs) and `gatherly up` (everything in one container). The web app is
# built in a Node stage and served by the `web` target (nginx, static files only). The services' image is the
# last stage, so it is what a plain `docker build` makes.
#   docker build -t gatherly .                 # the services' image
#   docker build --target web -t gatherly-web . # the web app's image

# --- the web app: static files built by vite --------------------------------------------------------------------
FROM node:22.12-bookworm-slim AS web-build
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npx vite build

# --- the Python environment: uv installs the locked dependencies, then the workspace ----------------------------
FROM ghcr.io/astral-sh/uv:0.9.5 AS uv
FROM python:3.11.11-slim-bookworm AS python-build
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode compiled at build time (the root filesystem is read-only at run time); no interpreter download.
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PYTHON=/usr/local/bin/python3.11
WORKDIR /app
# The locked dependencies first, in their own layer: a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
COPY kernel/pyproject.toml kernel/
COPY contracts/pyproject.toml contracts/
COPY app/pyproject.toml app/
COPY services/users/pyproject.toml services/users/
COPY services/groups/pyproject.toml services/groups/
COPY services/events/pyproject.toml services/events/
COPY services/notifications/pyproject.toml services/notifications/
COPY services/images/pyproject.toml services/images/
RUN uv sync --frozen --no-dev --all-packages --no-install-workspace
COPY kernel/ kernel/
COPY contracts/ contracts/
COPY services/ services/
COPY app/ app/
# Workspace members stay editable installs of /app: the app finds the web app at <checkout>/web/dist.
RUN uv sync --frozen --no-dev --all-packages

# --- the web app's image: nginx serving web/dist as an unprivileged user ------------------------------------------
FROM nginxinc/nginx-unprivileged:1.27.3-alpine AS web
COPY --from=web-build /src/web/dist /usr/share/nginx/html
COPY deploy/web/nginx.conf /etc/nginx/conf.d/default.conf
USER 10101:10101
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]

# --- the services' image ------------------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS gatherly
LABEL org.opencontainers.image.title="gatherly" \
      org.opencontainers.image.description="Gatherly services: gatherly run <service> | migrate | up" \
      org.opencontainers.image.source="https://github.com/gatherly/gatherly"
RUN groupadd --system --gid 10001 gatherly \
 && useradd --system --uid 10001 --gid gatherly --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin gatherly \
 && install -d -o gatherly -g gatherly -m 0700 /var/lib/gatherly
# Code and environment belong to root: the service user can read them, not change them.
COPY --from=python-build /app /app
COPY --from=web-build /src/web/dist /app/web/dist
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATHERLY_MODE=distributed \
    GATHERLY_HOST=0.0.0.0 \
    GATHERLY_PORT=8000 \
    GATHERLY_DATA_DIR=/var/lib/gatherly \
    GATHERLY_LOG_JSON=true
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Kubernetes uses its own probes (/livez, /readyz); this one serves `docker run`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
ENTRYPOINT ["gatherly"]
CMD ["up", "--no-demo"]
