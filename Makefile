PYTHON ?= python3

.PHONY: install test check lint bench demo

install:  ## install torch (CPU wheel) and the project with its test extras
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

test:  ## the whole test suite (CPU, tiny models)
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .

check: lint test

bench:
	$(PYTHON) scripts/bench_rollout.py --preset tiny --gen-length 256 --batch-size 16 --out outputs/bench_rollout.json
