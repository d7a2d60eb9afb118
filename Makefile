# The course's commands. On a fresh machine, `make lab` or `make test` builds .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The pinned CPU wheel goes in first: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
JOBS ?= 2

# Offline by design: notebooks and tests build tiny models from configs and never download anything.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

NOTEBOOK_FILES := $(wildcard notebooks/*/*.ipynb)
LINTED := shared tools tests template.py $(wildcard notebooks/*/*.py)

.PHONY: site site-deps site-test site-venv course-files
.PHONY: help venv lab test bench gpu-test check lint contract mirrors catalogue data unit notebooks portable sync run new clean clean-all

help:
	@echo "make lab     set up .venv if needed and open the course in JupyterLab"
	@echo "make test    set up .venv if needed and run every check (what CI runs)"
	@echo "make bench   on an NVIDIA GPU: the Triton kernels against their peers, to bench/results.json"
	@echo "make gpu-test  on an NVIDIA GPU: the kernel tests at full size, compiled (not interpreted)"
	@echo "make check   the fast checks: lint, contract, mirrors, catalogue, data manifest"
	@echo "make unit    unit tests of shared/ and tools/"
	@echo "make notebooks   re-run every notebook and compare with its stored outputs (nbval, strict)"
	@echo "make portable    the same with PyTorch's plain (non-SIMD) CPU kernels: outputs must not depend on the CPU"
	@echo "make run NB=notebooks/part/ID_name.ipynb   execute a reading, store outputs and run time, sync mirror"
	@echo "make new ID=V7 PART=vlm SLUG=qwen2_5_vl TITLE=\"Qwen2.5-VL\"   start a reading from the template"
	@echo "make sync    regenerate the .py mirrors (jupytext --sync), the README catalogue and learning-path map"
	@echo "make site    build the static site into build/site (offline; no notebook is executed)"
	@echo "make site-deps   install Debian's chromium and fonts-noto-cjk for site-test (as root; skips if present)"
	@echo "make site-test   open every page of build/site in headless chromium and check it"
	@echo "make clean   remove caches (make clean-all also removes .venv)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

lab: venv
	$(BIN)/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root)

test: venv check unit notebooks portable site-deps site site-test
	@echo "make test: all checks passed"

check: lint contract mirrors catalogue data course-files

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check shared tools tests

contract: venv
	$(BIN)/python tools/check_contract.py

mirrors: venv
	$(BIN)/python tools/check_mirrors.py

catalogue: venv
	$(BIN)/python tools/catalogue.py --check

data: venv
	$(BIN)/python tools/check_data.py

# The generated course files are fresh: the syllabus copy (and every prerequisite names a syllabus id), the
# learning-path map, the issue form's reading list; every Colab link opens a file of this repository.
course-files: venv
	$(BIN)/python tools/syllabus.py --check
	$(BIN)/python tools/learning_path.py --check
	$(BIN)/python tools/issue_form.py --check
	$(BIN)/python tools/badges.py

unit: venv
	$(BIN)/python -m pytest -q -n $(JOBS) tests

# Strict nbval: every stored output is compared with a fresh run. --dist loadfile keeps each notebook's
# cells on one worker (the default distribution splits a notebook across workers and fails).
notebooks: venv
	$(BIN)/python -m pytest -q --nbval --nbval-current-env --nbval-cell-timeout=600 \
		--sanitize-with tools/nbval_sanitize.cfg -n $(JOBS) --dist loadfile -p no:cacheprovider \
		template.ipynb $(NOTEBOOK_FILES)

# The same comparison with PyTorch's portable CPU kernels instead of this CPU's AVX2/AVX-512 ones. Float
# results differ in their last bits between kernel paths; a stored output that depends on them would fail
# on a reader's machine. Print rounded numbers and error bounds (shared.utils.error_bound) to pass.
portable: venv
	ATEN_CPU_CAPABILITY=default $(MAKE) --no-print-directory notebooks

sync: venv
	$(BIN)/jupytext --sync template.ipynb $(NOTEBOOK_FILES)
	$(BIN)/python tools/check_mirrors.py --write
	$(BIN)/python tools/catalogue.py
	$(BIN)/python tools/learning_path.py
	$(BIN)/python tools/issue_form.py

run: venv
	@test -n "$(NB)" || (echo "usage: make run NB=notebooks/<part>/<ID>_<name>.ipynb" && exit 2)
	$(BIN)/python tools/run_notebook.py $(NB)

new: venv
	@test -n "$(ID)" -a -n "$(PART)" -a -n "$(SLUG)" -a -n "$(TITLE)" || \
		(echo 'usage: make new ID=V7 PART=vlm SLUG=qwen2_5_vl TITLE="Qwen2.5-VL"' && exit 2)
	$(BIN)/python tools/new_reading.py --id "$(ID)" --part "$(PART)" --slug "$(SLUG)" --title "$(TITLE)"

# GPU targets. BENCH_PY=python3 uses an interpreter that already has a CUDA build of torch and Triton
# (a lent GPU machine); by default .venv, plus the bench extra (Liger-Kernel, a peer).
BENCH_PY ?=
bench:
	@if [ -z "$(BENCH_PY)" ]; then $(MAKE) --no-print-directory venv && $(BIN)/python -m pip install --quiet -e '.[bench]'; fi
	$(or $(BENCH_PY),$(BIN)/python) tools/bench.py

gpu-test:
	@if [ -z "$(BENCH_PY)" ]; then $(MAKE) --no-print-directory venv; fi
	$(or $(BENCH_PY),$(BIN)/python) -m pytest -q tests/test_kernels_rope.py tests/test_kernels_rmsnorm.py tests/test_kernels_attention.py

# The static site. tools/site.py writes build/site-src (docs + a mkdocs.yml inheriting site/mkdocs.yml).
SITE_STAMP := $(VENV)/.site-installed
site-venv: $(SITE_STAMP)

$(SITE_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,site]'
	@touch $(SITE_STAMP)

site: site-venv
	$(BIN)/python tools/syllabus.py --check
	$(BIN)/python tools/site.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --quiet --strict -f build/site-src/mkdocs.yml
	@echo "make site: build/site"

# Debian's chromium (Playwright drives it; no browser download) and CJK fonts for the 中文速览 sections.
site-deps:
	@if [ -x /usr/bin/chromium ] && dpkg -s fonts-noto-cjk >/dev/null 2>&1; then \
		echo "site-deps: chromium and fonts-noto-cjk already installed"; \
	else \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium fonts-noto-cjk; \
	fi

site-test: site-venv
	$(BIN)/python tools/site_test.py

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 rm -rf

clean-all: clean
	rm -rf $(VENV)
