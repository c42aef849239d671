# `make book`  — create/update .venv from pyproject.toml, execute every notebook with the default profile
#               (only those whose inputs changed), build the HTML book into _build/html.
# `make test`  — unit tests, every notebook executed with the smoke profile, the smoke book built with warnings
#               as errors.
# `make paper-dryrun` — every chapter with the paper profile on synthetic stand-ins of the real data (CI, before
#               `make test`; tests/test_paper_dryrun.py).
PROFILE ?= default
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
JOBS    ?= 2
STAMP   := $(VENV)/.installed
# glibc keeps freed tensor buffers (≤ 32 MiB) instead of unmapping them: ≈20% faster forward+backward passes
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 1073741824

.PHONY: book test unit paper-dryrun venv bench clean clean-cache chromium

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

book: $(STAMP)
	$(PY) -m oodlib book --profile $(PROFILE) --jobs $(JOBS)

unit: $(STAMP)
	$(PY) -m pytest -m "not notebook and not book and not paper_dryrun" -q

test: $(STAMP) chromium
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 -m "not paper_dryrun"

# every chapter with the paper profile on synthetic stand-ins (data_scripts/synthetic.py); CI runs it before `test`
paper-dryrun: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m paper_dryrun tests/test_paper_dryrun.py

# headless Chromium for the browser test (Debian's package; root on the project's machines)
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

bench: $(STAMP)
	$(PY) -m oodlib.bench all

clean:
	rm -rf _build results runs

clean-cache:
	rm -rf .cache
