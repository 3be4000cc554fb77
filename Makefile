# The two commands the README promises: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test bench clean tools

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hssk-gateway serve --config config/gateway.toml

test: $(STAMP) tools
	$(BIN)/python -m pytest -q

# Programs the tests start for real, as `command:debian-package` pairs, one line each (below: which
# tests need it). When one is missing and this is root on Debian, its package is installed;
# otherwise the tests that need it skip, or fail under CI=true. Quiet, and nothing at all once every
# command is there. Add a line here when a test needs another real program.
TOOLS := promtool:prometheus                       # the alert rules, tests/test_alert_rules.py
TOOLS += xmlsec1:xmlsec1                           # BHXH signatures, plugins/bhxh/tests/test_signing.py
TOOLS += chromium:chromium                         # the console, tests/transports/test_console_browser.py
TOOLS += chromedriver:chromium-driver              # its WebDriver, same test
TOOLS += pg_ctlcluster:postgresql                  # the postgresql store backend (Debian keeps initdb and postgres
                                                   # out of PATH; gateway/testing/postgres.py finds them)
TOOLS += haproxy:haproxy                           # two nodes behind HAProxy, tests/test_failover.py

tools:
	@for pair in $(TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || { \
	    echo "installing $$cmd: apt-get install $$pkg"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    install="apt-get install -y -qq -o DPkg::Lock::Timeout=120 --no-install-recommends $$pkg"; \
	    $$install >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && $$install >/dev/null 2>&1; } || \
	    echo "could not install $$pkg ($$cmd); the tests that need it will skip, or fail under CI=true"; }; \
	done

# The benchmark's load generator, built from the copy of its source in bench/.
bench/out/mllp-load: bench/mllp-load.c
	mkdir -p bench/out
	$(CC) -O2 -Wall -Wextra -o $@ bench/mllp-load.c

bench: $(STAMP) bench/out/mllp-load
	$(BIN)/python bench/mllp_throughput.py

clean:
	rm -rf $(VENV) var build *.egg-info
