# The two commands of the quick start. Each does its own set-up (venv, install, libusb).
PY := .venv/bin/python

.PHONY: setup demo test test-all lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m shapes3d.cli.main demo --out runs/demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

lint: setup
	.venv/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
