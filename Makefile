# Two commands set everything up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.golf-installed

.PHONY: test test-quick demo install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Torch first (a CPU build is on disk on the project's machines; GPU users override
# TORCH_SPEC), then the project, so the resolver never pulls a second torch.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check golfpack golfeval trainer tests bench

# One line per test file with its progress, and the slowest tests at the end, so a long
# run is never silent. `make test-quick` skips the tests marked slow (> ~5 s each).
test: $(STAMP)
	$(BIN)/ruff check golfpack golfeval trainer tests bench
	$(BIN)/python -m pytest -p no:cacheprovider

test-quick: $(STAMP)
	$(BIN)/ruff check golfpack golfeval trainer tests bench
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow"

DEMO_ARGS ?= --force

demo: $(STAMP)
	$(BIN)/python -m trainer.cli.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info demo_out
