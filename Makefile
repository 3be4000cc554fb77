# The two commands the README promises: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test bench clean promtool

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hssk-gateway serve --config config/gateway.toml

test: $(STAMP) promtool
	$(BIN)/python -m pytest -q

# promtool unit-tests the alert rules (tests/test_alert_rules.py). When it is missing and this is
# root on Debian, it comes from Debian's prometheus package; otherwise those tests skip, or fail
# under CI=true. Quiet, and nothing at all once promtool is there.
promtool:
	@command -v promtool >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || { \
	  echo "installing promtool: apt-get install prometheus"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  install="apt-get install -y -qq -o DPkg::Lock::Timeout=120 --no-install-recommends prometheus"; \
	  $$install >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && $$install >/dev/null 2>&1; } || \
	  echo "could not install prometheus (promtool); the alert rules' promtool tests will skip"; }

# The benchmark's load generator, built from the copy of its source in bench/.
bench/out/mllp-load: bench/mllp-load.c
	mkdir -p bench/out
	$(CC) -O2 -Wall -Wextra -o $@ bench/mllp-load.c

bench: $(STAMP) bench/out/mllp-load
	$(BIN)/python bench/mllp_throughput.py

clean:
	rm -rf $(VENV) var build *.egg-info
