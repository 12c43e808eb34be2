FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 openssl && rm -rf /var/lib/apt/lists/*
# An unprivileged user that owns the mount points, so named volumes start out owned by it.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin flowpipe \
    && mkdir -p /keys /public-keys /frames && chown flowpipe:flowpipe /keys /public-keys /frames && chmod 700 /keys /frames
WORKDIR /app
ENV FLOW_HOME=/app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY infra ./infra
COPY models ./models
RUN pip install --no-cache-dir .
USER 10001
