# Quick start: `make demo` (install + end-to-end demo on SQLite), `make test` (install + test suite),
# `make test-fast` (the unit tier: no model training, subprocesses, servers or database servers).
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint clean system-deps

install: $(STAMP)

# The ODBC driver manager (and FreeTDS) lets pyodbc import and talk to SQL Server;
# systemd-analyze checks the units' sandbox; the Prometheus packages test the alerting; all
# installed when running as root on Debian/Ubuntu and missing, skipped otherwise.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q libodbc.so.2; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing unixodbc and tdsodbc (SQL Server via FreeTDS)"; \
	    (apt-get install -y -qq unixodbc tdsodbc >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq unixodbc tdsodbc >/dev/null 2>&1)) || \
	     echo "warning: could not install unixodbc/tdsodbc; SQL Server support unavailable"; \
	  else echo "note: libodbc not found; install unixodbc for SQL Server support"; fi; \
	fi
	@if ! command -v systemd-analyze >/dev/null; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing systemd (systemd-analyze checks the units' sandbox)"; \
	    apt-get install -y -qq systemd >/dev/null 2>&1 || echo "warning: could not install systemd; the sandbox check is skipped"; \
	  else echo "note: systemd-analyze not found; the units' sandbox check is skipped"; fi; \
	fi
	@# Prometheus, Pushgateway, Alertmanager (promtool, amtool): the alert-rule tests and the alert
	@# delivery test. policy-rc.d keeps their services from starting where none was configured.
	@if ! command -v promtool >/dev/null || ! command -v prometheus-pushgateway >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing prometheus, prometheus-pushgateway, prometheus-alertmanager (alert rule tests; services not started)"; \
	    made_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1; fi; \
	    pkgs="prometheus prometheus-pushgateway prometheus-alertmanager"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null 2>&1)) || \
	     echo "warning: could not install the Prometheus packages; the alerting tests fail until they are installed"; \
	    if [ -n "$$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  else echo "note: promtool / prometheus-pushgateway / prometheus-alertmanager not found; the alerting tests are skipped"; fi; \
	fi

$(STAMP): requirements.txt requirements-dev.txt
	@$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -c "import tensorflow, keras, sqlalchemy, pandas, sklearn" 2>/dev/null
	touch $(STAMP)

demo: install
	$(BIN)/python run_scheduler.py demo

# Two pytest-xdist workers: many tests wait on subprocesses, servers and databases, so two overlap well on 2 cores.
TEST_WORKERS ?= 2

test: install system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/inference.py

clean:
	rm -rf $(VENV) var .pytest_cache
