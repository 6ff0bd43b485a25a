# GenAI Factory: the two commands are `make demo` and `make test`; both set everything up first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
MODULES := shared llm-gateway prompt-framework rag-pipeline agent-orchestration model-serving \
           evaluation observability fine-tuning guardrails semantic-cache workflow knowledge-graph \
           multimodal security cost-optimization
SRC_DIRS := $(addsuffix /src,$(MODULES))
TEST_DIRS := tests $(addsuffix /tests,$(MODULES))

# No library may reach for a model or data hub, analytics or a remote price list.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True DO_NOT_TRACK=true \
       SCARF_NO_ANALYTICS=true TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS= MLFLOW_DISABLE_TELEMETRY=true \
       RAY_USAGE_STATS_ENABLED=0

.PHONY: help install lint typecheck pytest test demo bench docs clean

help:
	@echo "make demo   set up and run the platform's main job on embedded defaults"
	@echo "make test   set up, then ruff, mypy --strict and every module's tests with coverage"
	@echo "make bench  every module's benchmarks;  make docs  API docs;  make clean"

install:
	@bash scripts/install.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy $(SRC_DIRS)

pytest: install
	$(BIN)/python -m pytest $(TEST_DIRS) $(SRC_DIRS) --doctest-modules \
	  --cov --cov-report= $(PYTEST_ARGS)
	$(BIN)/python scripts/coverage_report.py --fail-under 80 $(MODULES)

test: lint typecheck pytest

demo: install
	@bash scripts/demo.sh

bench: install
	@for m in $(MODULES); do [ "$$m" = shared ] || $(MAKE) --no-print-directory -C $$m bench || exit 1; done

docs: install
	@for m in $(MODULES); do $(MAKE) --no-print-directory -C $$m docs || exit 1; done

clean:
	rm -rf $(VENV) site .coverage .pytest_cache .mypy_cache .ruff_cache .hypothesis
