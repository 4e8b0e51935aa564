# Each target bootstraps its own virtualenv, so a fresh clone needs nothing else by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-docker chaos lint fmt schemas up down clean bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/ensure-system-deps.sh
	$(BIN)/vidpipe demo

test: $(STAMP)
	bash scripts/ensure-system-deps.sh
	$(BIN)/pytest --ignore=tests/docker

# The Docker paths (docs/docker.md): an engine, Compose v2 and the local images without a
# registry (scripts/ensure-docker.sh), the compose stack end to end, then the integration tests
# again with Kafka and PostgreSQL from testcontainers instead of the local processes.
DOCKER_LOCAL_IMAGES := VIDPIPE_KAFKA_IMAGE=vidpipe/kafka:local VIDPIPE_POSTGRES_IMAGE=vidpipe/postgres:local
test-docker: $(STAMP)
	bash scripts/ensure-system-deps.sh
	bash scripts/ensure-docker.sh
	$(DOCKER_LOCAL_IMAGES) $(BIN)/pytest tests/docker -s -p no:cacheprovider
	VIDPIPE_DEV_BACKEND=docker $(DOCKER_LOCAL_IMAGES) $(BIN)/pytest tests/integration -p no:cacheprovider

# The long fault run (the short one is part of `make test`); CHAOS_REQUESTS, CHAOS_SEED to vary.
CHAOS_REQUESTS ?= 500
CHAOS_SEED     ?= 20261201
chaos: $(STAMP)
	bash scripts/ensure-system-deps.sh
	VIDPIPE_CHAOS_REQUESTS=$(CHAOS_REQUESTS) VIDPIPE_CHAOS_SEED=$(CHAOS_SEED) \
		$(BIN)/pytest tests/chaos -s -p no:cacheprovider
	VIDPIPE_CLUSTER_REQUESTS=$(CHAOS_REQUESTS) $(BIN)/pytest tests/cluster -s -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy vidpipe schemas services tests bench
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: $(STAMP)
	$(BIN)/python -m schemas.export
	$(BIN)/python -m services.asyncapi

up: $(STAMP)
	bash scripts/ensure-system-deps.sh
	$(BIN)/vidpipe up

down: $(STAMP)
	$(BIN)/vidpipe down

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf .vidpipe .pytest_cache .mypy_cache .ruff_cache
