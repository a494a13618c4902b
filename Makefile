# The two commands: `make demo` and `make test`. Both create .venv and install from the lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo test install lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/leadval demo

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lock: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	{ echo '# Exact versions every install uses (pip install -c constraints.txt). Regenerate with `make lock`.'; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^leadval'; } > constraints.txt

clean:
	rm -rf $(VENV) data/crm.db models/mlflow.db models/artifacts reports
