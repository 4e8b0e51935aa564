# One image for every stage and the emulator; the command picks which (see compose.yaml).

# The wheel: what production installs (it leaves the dev tooling, vidpipe/dev, out).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vidpipe ./vidpipe
COPY schemas ./schemas
COPY services ./services
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 vidpipe
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# This image is the compose dev stack's: compose.yaml runs `vidpipe emulator` from it beside the
# stages, so the dev tooling the wheel leaves out is added here, on purpose, into the installed
# package (where `vidpipe` finds it and mounts the dev commands).
COPY vidpipe/dev /usr/local/lib/python3.11/site-packages/vidpipe/dev
WORKDIR /app
USER vidpipe
ENTRYPOINT ["vidpipe"]
