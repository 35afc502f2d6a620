# Two entry points (see README):
#   make demo   create .venv if needed, then run the demo on the digital phantom
#   make test   create .venv if needed, then run the whole test suite
# The environment is rebuilt only when pyproject.toml changes (stamp file).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: demo test env benchmark clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build; anything looser pulls CUDA wheels.
	$(VENV)/bin/python -m pip install -q "torch==2.13.0"
	$(VENV)/bin/python -m pip install -q -e ".[classify,test]" "torch==2.13.0"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/neonatal-brain demo --out $(DEMO_OUT)

test: $(STAMP)
	$(VENV)/bin/python -m pytest

# speed / memory against scikit-image and SimpleITK, then the ROI registration accuracy;
# results under benchmark-output/ (benchmarks/README.md holds the recorded runs)
benchmark: $(STAMP)
	mkdir -p benchmark-output
	$(VENV)/bin/python benchmarks/bench_vessels.py --out benchmark-output/bench_vessels.json
	$(VENV)/bin/python benchmarks/bench_roi.py --json benchmark-output/bench_roi.json

clean-env:
	rm -rf $(VENV)
