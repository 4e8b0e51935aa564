# One image for every stage and the emulator; the command picks which (see compose.yaml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY vidpipe ./vidpipe
COPY schemas ./schemas
COPY services ./services
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir . && useradd --system --uid 10001 vidpipe
USER vidpipe
ENTRYPOINT ["vidpipe"]
