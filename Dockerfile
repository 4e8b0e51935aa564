# One image for every stage and the emulator; the command picks which (see compose.yaml).
#
# BASE_IMAGE is the public python:3.11-slim by default. Without a registry, any Debian bookworm
# base works too (scripts/ensure-docker.sh makes one; bookworm's python3 is 3.11): Python and
# venv come from apt when the base lacks them. Either way vidpipe lives in the venv /opt/vidpipe.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS python
RUN if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/vidpipe
ENV PATH=/opt/vidpipe/bin:$PATH

# The wheel: what production installs (it leaves the dev tooling, vidpipe/dev, out).
FROM python AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vidpipe ./vidpipe
COPY schemas ./schemas
COPY services ./services
RUN pip wheel -q --no-cache-dir --no-deps -w /wheels .

FROM python
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 vidpipe \
    && mkdir -p /data/videos && chown vidpipe /data/videos
# The dependencies first, from pyproject.toml and the pins: this layer stays cached while only
# the code changes.
COPY pyproject.toml constraints.txt /tmp/deps/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/deps/pyproject.toml', 'rb'))['project']['dependencies']))" \
        >/tmp/deps/requirements.txt \
    && pip install -q --no-cache-dir -c /tmp/deps/constraints.txt -r /tmp/deps/requirements.txt \
    && rm -rf /tmp/deps
COPY --from=wheel /wheels /wheels
RUN pip install -q --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
# This image is the compose dev stack's: compose.yaml runs `vidpipe emulator` from it beside the
# stages, so the dev tooling the wheel leaves out is added here, on purpose, into the installed
# package (where `vidpipe` finds it and mounts the dev commands).
COPY vidpipe/dev /opt/vidpipe/lib/python3.11/site-packages/vidpipe/dev
# A named volume mounted here starts with this directory's owner, so the stages can write to it.
VOLUME /data/videos
WORKDIR /app
USER vidpipe
ENTRYPOINT ["vidpipe"]
