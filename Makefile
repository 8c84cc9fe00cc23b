# The two set-up commands (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

.PHONY: install demo test clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch: keep one that is already there (a CUDA build, say). Without an NVIDIA GPU install the pinned CPU
	@# build; an unpinned `torch` would pull several GB of CUDA packages onto a CPU machine.
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(PIP) install torch; \
	else \
		$(PIP) install torch==2.13.0; \
	fi
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/whisperctl transcribe examples/short.wav examples/long.flac

test: install
	$(PY) -m pytest -q --durations=15

clean:
	rm -rf $(VENV) .pytest_cache
