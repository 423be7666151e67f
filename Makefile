# make demo: set up, scan data-samples/ with the default offline encoder, print where the report is.
# make test: set up from scratch (virtual environment + every dependency) and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# fitted concept models and the compiled kernel are cached here (explicit: without it nothing is cached)
export ANALYZER_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: setup demo test test-fast bench clean notebooks

$(BIN)/analyzer: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	touch $(BIN)/analyzer

setup: $(BIN)/analyzer

demo: setup
	rm -rf runs/demo
	$(BIN)/analyzer scan data-samples/laion_sample.parquet --out runs/demo --embedding-column embedding \
		--embedding-modality text --policy analyzer/policies/default.yaml
	@echo "report: $(CURDIR)/runs/demo/report.html"

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# the fast tier: unit tests and one small scan (under 3 minutes); `make test` runs the full suite
test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" tests

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
	@echo "== benchmarks/bench_scan_embeddings.py --no-embeddings"; $(BIN)/python benchmarks/bench_scan_embeddings.py --no-embeddings

notebooks: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs build dist *.egg-info .cache
