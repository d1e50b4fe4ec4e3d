# The two quick-start commands (README): `make demo` and `make test`.
# Each creates .venv with the exact tested package set (requirements/lock.txt) and
# installs hudd_core in it (building hudd_core._C; CUDA sources too when nvcc is found).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= demo_run
SOURCES := $(shell find csrc python -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh') CMakeLists.txt setup.py

.PHONY: install demo test lint bench gpu-check clean

$(VENV)/.deps: requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r requirements/lock.txt
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES) pyproject.toml
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

demo: install
	$(VENV)/bin/hudd demo --workdir $(WORKDIR)

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_distance.py

gpu-check: install
	bash benchmarks/gpu_check.sh

clean:
	rm -rf build $(VENV) hudd_core/*.so
