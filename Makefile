PYTHON ?= python3

.PHONY: install test check lint bench demo

install:  ## install torch (CPU build), the project with its test extras, and DeepSpeed (engine tests)
	$(PYTHON) -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
	  || $(PYTHON) -m pip install torch==2.13.0  # offline machines with a local CPU wheel
	$(PYTHON) -m pip install -e ".[dev]"
	DS_BUILD_OPS=0 $(PYTHON) -m pip install "deepspeed>=0.15"
	$(PYTHON) scripts/deepspeed_op.py

test:  ## the whole test suite (CPU, tiny models)
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .

check: lint test

bench:
	$(PYTHON) scripts/bench_rollout.py --preset tiny --gen-length 256 --batch-size 16 --out outputs/bench_rollout.json
