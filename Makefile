# Two commands on a fresh machine:
#   make demo   set up .venv (if missing) and run the whole workflow on the embedded demo
#   make test   set up .venv (if missing) and run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# auto: the CUDA build (torch's CUDA wheel, mmcv with CUDA ops) where an NVIDIA
# driver is visible, else the CPU build; 1 or 0 to choose (README, GPU)
CUDA ?= auto
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
STAMP := $(VENV)/.oidseg-installed
# rules call `python`: the venv's
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test install lint report clean

# `make install` always runs the installer (idempotent: what is there stays);
# `make demo` / `make test` run it only when the venv is missing or older than pyproject.toml
install:
	@PYTHON='$(PYTHON)' VENV='$(VENV)' CUDA='$(CUDA)' bash ci/install.sh
	touch $(STAMP)

# torch first (a local CPU wheel where the machine has one), then mmcv 2.1.0 built
# with its C++ ops against that torch (no build isolation; ~11 min the first time,
# pip caches the wheel), then the package with everything else. ci/install.sh
# announces each step with its expected time and prints a line a minute
# during the long ones.
$(STAMP): pyproject.toml
	@PYTHON='$(PYTHON)' VENV='$(VENV)' CUDA='$(CUDA)' bash ci/install.sh
	touch $(STAMP)

demo: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES) all
	$(PY) scripts/print_scores.py results/eval/summary.csv

test: $(STAMP)
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(SNAKEMAKE) --lint
	$(VENV)/bin/snakefmt --check .

report: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES) all
	$(SNAKEMAKE) --report report.html

clean:
	rm -rf results work logs benchmarks data/demo .snakemake
