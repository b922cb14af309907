# Quick start: `make demo` (install + end-to-end demo on SQLite), `make test` (install + test suite).
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean system-deps

install: $(STAMP)

# The ODBC driver manager (and FreeTDS) lets pyodbc import and talk to SQL Server;
# systemd-analyze checks the units' sandbox; both installed when running as root on Debian/Ubuntu
# and missing, skipped otherwise.
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

$(STAMP): requirements.txt requirements-dev.txt
	@$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -c "import tensorflow, keras, sqlalchemy, pandas, sklearn" 2>/dev/null
	touch $(STAMP)

demo: install
	$(BIN)/python run_scheduler.py demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/inference.py

clean:
	rm -rf $(VENV) var .pytest_cache
