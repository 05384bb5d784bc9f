# Two commands on a fresh machine: `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_PARAMS ?= params.demo.yaml
DEMO_XRAY_PARAMS ?= params.demo.xray.yaml
SCIENCE_PARAMS ?= params.science.yaml
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: venv test chromium demo science mock dashboard explore bench clean-demo

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# The report tests need headless Chromium: installed here when this user may (root or
# password-less sudo), otherwise make stops with one line saying what to install.
TEST_WORKERS ?= 2
test: chromium $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

chromium:
	@bash .ci/ensure-chromium

mock: $(STAMP)
	$(PY) -m scripts.mock --params $(DEMO_PARAMS) --size demo

# Builds the mock universe, then runs every stage, in order, on the demo params; beside
# its train, analyse and infer stages (in a second process, log in reports/demo_xray.log),
# trains and analyses a second model on the X-ray maps of the mock clusters, with the
# posteriors of their unobservables (central cooling time, M200c).
demo: mock
	$(PY) -m scripts.demo --params $(DEMO_PARAMS) --beside $(DEMO_XRAY_PARAMS)

# The science preset (not part of CI; at most 45 minutes on 2 cores once the mock exists):
# the demo's pipeline on its own mock universe, three times the demo's (--size science, in
# dataset_raw/science and dataset/science), trained up to 16x longer (run `science`), with its
# analysis and posteriors. What the method can do, beside the demo's numbers in the README.
SCIENCE_ENV := DATASET_RAW_PATH=$(CURDIR)/dataset_raw/science ILLUSTRIS_PATH=$(CURDIR)/dataset_raw/science/TNG \
	DATASET_PATH=$(CURDIR)/dataset/science
science: $(STAMP)
	$(SCIENCE_ENV) $(PY) -m scripts.mock --params $(SCIENCE_PARAMS) --size science
	$(SCIENCE_ENV) $(PY) -m scripts.demo --params $(SCIENCE_PARAMS)

dashboard: $(STAMP)
	$(PY) -m scripts.tracking dashboard

# The interactive explorer of an analysed run on http://127.0.0.1:5006/ (make explore
# RUN=demo_xray PORT=5007 for another run or port).
EXPLORE_PARAMS ?= $(DEMO_PARAMS)
PORT ?= 5006
explore: $(STAMP)
	$(PY) -m scripts.explore --params $(EXPLORE_PARAMS) --port $(PORT) $(if $(RUN),--run $(RUN))

bench: $(STAMP)
	for b in bench/bench_*.py; do $(PY) -m bench.$$(basename $$b .py) || exit 1; done

clean-demo:
	rm -rf dataset_raw/MOCK_* dataset_raw/TNG dataset/MOCK_* dataset/*.parquet dataset/*.json models/demo models/demo_xray models/science dataset_raw/science dataset/science plots reports
