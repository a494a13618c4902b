# The two commands: `make demo` and `make test` (README, "The two commands"). Both create .venv and install from the
# lock; `make test` and `make test-fast` first run scripts/bootstrap-system, which installs what the tests need from
# the machine (Chromium, Java 17, JDBC jars, PostgreSQL and its `test` database) when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := .[dev,spark]
export OPENBLAS_NUM_THREADS ?= 1
# The suite runs on every core, one test file per worker (pytest-xdist), so a file's fixtures are built once.
# `make test PARALLEL=` runs it in one process.
PARALLEL ?= -n auto --dist loadfile
# The tests' PostgreSQL (tests make and drop a schema of their own there); bootstrap-system checks it answers.
export LEADVAL_TEST_PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

# Each set-up step appends "<step> <seconds> s" here; the target that ran it prints them in one line, then removes it.
SETUP_TIMES := $(or $(TMPDIR),/tmp)/leadval-setup-times.$(shell echo $$PPID)
# $(call timed,STEP,COMMAND): runs COMMAND and records how long it took as STEP (no commas in COMMAND).
timed = t0=$$(date +%s) && $(2) && echo "$(1) $$(( $$(date +%s) - t0 )) s" >> $(SETUP_TIMES)
# $(call setup_summary,STEPS): "setup: bootstrap 1 s, venv 4 s, install 212 s"; a step that had nothing to do is "up to date".
define setup_summary
@line=; for s in $(1); do \
  v=$$(sed -n "s/^$$s //p" $(SETUP_TIMES) 2>/dev/null | tail -n1); line="$$line$${line:+, }$$s $${v:-up to date}"; \
done; echo "setup: $$line"; rm -f $(SETUP_TIMES)
endef

.PHONY: demo test test-fast install bootstrap lock bench clean

$(BIN)/python:
	@echo "setup: creating $(VENV) with $(PYTHON) -m venv, and upgrading its pip..."
	@$(call timed,venv,{ $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "setup: '$(PYTHON) -m venv' failed:" \
	  "Python 3.11+ with venv is needed (Debian: apt-get install -y python3-venv)" >&2; exit 1; }; } \
	  && $(BIN)/python -m pip install --quiet --upgrade pip)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	@echo "setup: installing leadval and the $$(grep -c '==' constraints.txt) packages pinned in constraints.txt" \
	  "(mlflow, lightgbm, bentoml, pyspark, ...); 2.5 to 5 min the first time; pip's progress follows..."
	@$(call timed,install,$(BIN)/pip install -c constraints.txt -e '$(EXTRAS)') && touch $(STAMP)

install: $(STAMP)
	$(call setup_summary,venv install)

# What the tests need from the machine; first, as a bare Debian may lack python3-venv, which .venv needs.
bootstrap:
	@echo "setup: checking the machine for what the tests need (scripts/bootstrap-system)..."
	@$(call timed,bootstrap,PYTHON=$(PYTHON) scripts/bootstrap-system)
	$(if $(filter-out bootstrap,$(MAKECMDGOALS)),,$(call setup_summary,bootstrap))

demo: $(STAMP)
	$(call setup_summary,venv install)
	$(BIN)/leadval demo

test: bootstrap $(STAMP)
	$(call setup_summary,bootstrap venv install)
	$(BIN)/pytest -q $(PARALLEL)

# The inner loop: everything but the tests marked slow (Spark, notebooks, end-to-end runs in a subprocess).
test-fast: bootstrap $(STAMP)
	$(call setup_summary,bootstrap venv install)
	$(BIN)/pytest -q -m "not slow" $(PARALLEL)

bench: $(STAMP)
	$(call setup_summary,venv install)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lock: $(BIN)/python
	$(call setup_summary,venv)
	$(BIN)/pip install -e '$(EXTRAS)'
	{ echo '# Exact versions every install uses (pip install -c constraints.txt). Regenerate with `make lock`.'; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^leadval'; } > constraints.txt

clean:
	rm -rf $(VENV) data/crm.db models/mlflow.db models/mlflow.db.leadval-champions models/artifacts reports
