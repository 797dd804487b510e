# The two commands a newcomer runs (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_PAIR ?= day2night
DEMO_STEPS ?= 400

.PHONY: install demo test lint bench clean

$(BIN)/unpaired: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/unpaired

## demo: make a synthetic dataset, train a small CycleGAN briefly on the CPU, evaluate it,
## export it to ONNX into ./model-store and translate the held-out day images to night
demo: install
	$(BIN)/unpaired datasets make $(DEMO_PAIR) --out data/$(DEMO_PAIR) --size 64
	rm -rf runs/demo-$(DEMO_PAIR)
	$(BIN)/unpaired train --config configs/cpu64.yaml --dataroot data/$(DEMO_PAIR) \
		--max-steps $(DEMO_STEPS) --out runs/demo-$(DEMO_PAIR)
	$(BIN)/unpaired evaluate runs/demo-$(DEMO_PAIR) --dataroot data/$(DEMO_PAIR)
	$(BIN)/unpaired export runs/demo-$(DEMO_PAIR) --name demo-$(DEMO_PAIR) --store model-store \
		--dataroot data/$(DEMO_PAIR) --overwrite
	$(BIN)/unpaired models list --store model-store
	$(BIN)/unpaired translate demo-$(DEMO_PAIR) data/$(DEMO_PAIR)/testA --direction AtoB \
		--store model-store --out demo/$(DEMO_PAIR)-AtoB

## test: lint, type-check and run the test suite
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --durations=15

bench: install
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) runs data model-store demo
