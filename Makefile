# Set-up and entry points. Every target installs what it needs into .venv first,
# so `make demo` and `make test` work on a fresh machine.
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CORES  ?= 2
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[train,workflow,test]"
	# ptychodus' own product-file reader checks `xrayflow export --format ptychodus`
	# (tests/export); the reader needs none of its GUI/AI dependencies, so they stay out
	$(BIN)/python -m pip install -q --no-deps ptychodus==1.7.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --workflow-profile profiles/local
	$(BIN)/snakemake --cores 1 --workflow-profile profiles/local --report results/report.html

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/ruff format --check src tests benchmarks workflow/scripts
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/snakefmt --check Snakefile rules

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks workflow/scripts

bench: $(STAMP)
	$(BIN)/python benchmarks/forward_model.py

clean:
	rm -rf $(VENV) .snakemake results logs
