# syntax=docker/dockerfile:1
# The engineroom image: `engineroom api` by default; `engineroom worker ...` with another command.
# Build from the repository root: pyproject.toml maps the root folder to the `engineroom` package.

# --- builder: wheels for engineroom and every dependency --------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# One wheel per distribution, so the runtime stage installs offline and needs no build tools.
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the installed wheels, a non-root user, nothing else ------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="engineroom" \
      org.opencontainers.image.description="A job system for AI-engine workloads" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric id, so orchestrators that check runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 engineroom \
    && useradd --system --uid 10001 --gid engineroom --create-home --home-dir /home/engineroom \
       --shell /usr/sbin/nologin engineroom

# The wheels are bind-mounted from the builder, never copied, so they add no layer to this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels engineroom

USER 10001:10001
WORKDIR /home/engineroom

EXPOSE 8000

# Liveness of the default command (`api` on port 8000). slim has no curl, so Python asks; urlopen raises on
# refusal or a non-2xx answer. Worker containers override this (see docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["engineroom"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
