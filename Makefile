# `make run`: set up and train the default recipe on the embedded dataset. `make test`: set up, lint and run the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/simclr_shapes.py
WORKDIR ?= workdirs/simclr_shapes

.PHONY: run test lint venv clean

$(BIN)/activate: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $(BIN)/activate

$(VENV)/.test-extras: $(BIN)/activate requirements-test.txt
	-$(BIN)/pip install -q --no-deps -r requirements-test.txt
	touch $@

venv: $(BIN)/activate

run: venv
	mkdir -p $(dir $(WORKDIR))
	$(BIN)/python main.py --config=$(CONFIG) --workdir=$(WORKDIR)

lint: venv
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .

test: venv $(VENV)/.test-extras lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf workdirs
