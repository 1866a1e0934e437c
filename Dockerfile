# syntax=docker/dockerfile:1
# Flyswatter API image: `flyswatter serve` as a non-root user; `alembic upgrade head` runs from
# the same image (docker-compose.yml's one-shot `migrate` service).

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change,
# not on every source edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt

# The package itself, installed (not editable) into the same virtualenv.
COPY README.md ./
COPY flyswatter ./flyswatter
RUN pip install --no-deps . && rm -rf /src


FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLYSWATTER_HOST=0.0.0.0 \
    FLYSWATTER_PORT=8000
# Report PDFs: Chinese, Japanese and Korean glyphs (DejaVu, for the rest, comes with matplotlib).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-droid-fallback \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 flyswatter \
    && useradd --system --uid 10001 --gid flyswatter --no-create-home --shell /usr/sbin/nologin flyswatter
COPY --from=builder /opt/venv /opt/venv
# alembic.ini and the migrations stay in the working directory, where `alembic` and
# `flyswatter migrate` look for them (flyswatter/migrations.py).
WORKDIR /app
COPY alembic.ini ./
COPY alembic ./alembic
USER flyswatter:flyswatter
EXPOSE 8000
# No curl in the slim image: the interpreter that is there anyway does the probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FLYSWATTER_PORT', '8000'), timeout=2)"]
# Exec form: `flyswatter` is PID 1 and gets SIGTERM itself (graceful shutdown). serve refuses
# to start without FLYSWATTER_KEYCLOAK_URL and FLYSWATTER_CURSOR_SECRET (README, "Production").
CMD ["flyswatter", "serve"]
