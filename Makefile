# The two commands the README promises: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hssk-gateway serve --config config/gateway.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The benchmark's load generator, built from the copy of its source in bench/.
bench/out/mllp-load: bench/mllp-load.c
	mkdir -p bench/out
	$(CC) -O2 -Wall -Wextra -o $@ bench/mllp-load.c

bench: $(STAMP) bench/out/mllp-load
	$(BIN)/python bench/mllp_throughput.py

clean:
	rm -rf $(VENV) var build *.egg-info
