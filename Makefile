# The two commands a newcomer runs (see README.md): `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_PAIR ?= day2night
DEMO_STEPS ?= 400
DEMO_DOMAINS ?= day,night
DEMO_MODEL := model-store/demo-$(DEMO_PAIR)/manifest.json
# A real model trained elsewhere (vintagify 0.1.2 on PyPI, sha256-pinned): see `unpaired models fetch`
REAL_MODEL ?= vintage
FETCH_FLAGS ?=
# Debian packages the tests drive for real: a private Redis and a headless browser
SYSTEM_PACKAGES := redis-server:redis-server chromium:chromium chromedriver:chromium-driver

.PHONY: install serve demo demo-model real-model student test system-deps lint bench soak architecture screenshots clean

$(BIN)/unpaired: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/unpaired

## serve: the service with its web page, on a real model and a demo model (made on first run)
serve: install $(DEMO_MODEL) real-model
	UNPAIRED_DEFAULT_MODEL=$(REAL_MODEL) $(BIN)/unpaired serve --store model-store

## real-model: fetch the real model into ./model-store; without a network, say why and go on
real-model: | install
	@test -f model-store/$(REAL_MODEL)/manifest.json || \
		$(BIN)/unpaired models fetch $(REAL_MODEL) --store model-store $(FETCH_FLAGS) || \
		echo "make: going on without the real model '$(REAL_MODEL)' (why: above); the demo model serves"

## demo-model: a small CycleGAN on a built-in pair, exported into ./model-store (~2 CPU minutes)
demo-model: $(DEMO_MODEL)

$(DEMO_MODEL): | install
	$(BIN)/unpaired datasets make $(DEMO_PAIR) --out data/$(DEMO_PAIR) --size 64
	rm -rf runs/demo-$(DEMO_PAIR)
	$(BIN)/unpaired train --config configs/cpu64.yaml --dataroot data/$(DEMO_PAIR) \
		--max-steps $(DEMO_STEPS) --out runs/demo-$(DEMO_PAIR)
	$(BIN)/unpaired export runs/demo-$(DEMO_PAIR) --name demo-$(DEMO_PAIR) --store model-store \
		--alias $(DEMO_PAIR) --domains $(DEMO_DOMAINS) --dataroot data/$(DEMO_PAIR) --overwrite

## student: a CPU student of the real model, distilled on the photos scikit-image ships (~20 min;
## `make serve` serves it beside its teacher: docs/quality.md says how close it comes)
STUDENT := $(REAL_MODEL)-cpu
STUDENT_STEPS ?= 6000
student: install real-model
	$(BIN)/unpaired datasets make photos --out data/photos
	rm -rf runs/$(STUDENT)
	$(BIN)/unpaired distill $(REAL_MODEL) --store model-store --dataroot data/photos \
		--out runs/$(STUDENT) --student resnet_6blocks --ngf 16 --size 128 --batch-size 4 \
		--max-steps $(STUDENT_STEPS) --set lr=1e-3 --set distill_crops=24 --set distill_colour=0.5 \
		--set distill_holdout=2 --no-progress
	$(BIN)/unpaired export runs/$(STUDENT) --name $(STUDENT) --store model-store --overwrite \
		--domains modern,vintage --license MIT --description "$(STUDENT_ABOUT)"
STUDENT_ABOUT := A CPU student of vintage (vintagify 0.1.2, MIT): a ResNet-6 at width 16, distilled \
	on the photos scikit-image ships (held out: chelsea, coffee) by make student; see docs/quality.md

## demo: the tour: synthetic dataset, train, evaluate, export, translate the held-out images
demo: install $(DEMO_MODEL) real-model
	$(BIN)/unpaired evaluate runs/demo-$(DEMO_PAIR) --dataroot data/$(DEMO_PAIR)
	$(BIN)/unpaired models list --store model-store
	$(BIN)/unpaired translate demo-$(DEMO_PAIR) data/$(DEMO_PAIR)/testA --direction AtoB \
		--store model-store --out demo/$(DEMO_PAIR)-AtoB
	@test ! -f model-store/$(REAL_MODEL)/manifest.json || { \
		$(BIN)/unpaired datasets make photos --out data/photos && \
		$(BIN)/unpaired translate $(REAL_MODEL) data/photos/testA --store model-store \
			--out demo/$(REAL_MODEL); }

## system-deps: install the Debian packages the tests use (as root or with sudo), if missing
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
	else echo "missing Debian packages:$$missing (install them as root; their tests skip)"; exit 0; fi; \
	echo "installing$$missing"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing

## test: lint, type-check and run the test suite
test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist loadscope --durations=15

## bench: training throughput on this machine (the others: docs/benchmarks.md)
bench: install
	$(BIN)/python -m bench.train_throughput

## soak: 20 minutes of distributed mode under load with faults (docs/benchmarks.md, "The soak")
soak: install system-deps
	$(BIN)/python -m bench.soak --minutes 20 --json-out docs/soak.json --plot docs/soak.png

## screenshots: refresh the web page's pictures in docs/ from the browser tests
screenshots: install system-deps
	UNPAIRED_SCREENSHOTS_DIR=docs $(BIN)/pytest -q tests/service/api/test_web_page.py \
		tests/service/api/test_web_bulk.py -k "see_the_result or archive_becomes_a_job"

## architecture: redraw docs/architecture/*.svg from the code (pydeps; needs Graphviz's `dot`)
architecture: install
	$(BIN)/pydeps bench --only models training service cli bench --max-module-depth 1 \
		--rankdir BT --no-show -T svg -o docs/architecture/packages.svg
	$(BIN)/pydeps service --only service --max-module-depth 2 \
		--rankdir BT --no-show -T svg -o docs/architecture/service-rooms.svg

clean:
	rm -rf $(VENV) runs data model-store demo
