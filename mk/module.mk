# Shared targets for every module's Makefile. A module's Makefile sets PKG (e.g. serving) and
# includes this file; everything runs in the repository's one .venv (created by `make install`).
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
MODULE_DIR := $(abspath $(dir $(firstword $(MAKEFILE_LIST))))
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True DO_NOT_TRACK=true \
       TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS= MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0

.PHONY: install test lint bench run docs

install:
	@$(MAKE) --no-print-directory -C $(ROOT) install

test: install
	# The bar counts this module's own source only (the root config measures every genai_factory
	# package a test imports, e.g. the gateway's composition tests load other modules).
	cd $(MODULE_DIR) && COVERAGE_FILE=$(MODULE_DIR)/.coverage $(BIN)/pytest tests -c $(ROOT)/pyproject.toml \
	  --rootdir $(ROOT) --cov=genai_factory.$(PKG) --cov-report=
	$(BIN)/coverage report --rcfile=$(ROOT)/pyproject.toml --data-file=$(MODULE_DIR)/.coverage \
	  --include='$(MODULE_DIR)/src/*' --fail-under=80

lint: install
	cd $(ROOT) && $(BIN)/ruff check $(MODULE_DIR) && $(BIN)/ruff format --check $(MODULE_DIR) \
	  && $(BIN)/mypy $(MODULE_DIR)/src

bench: install
	@if [ -f $(MODULE_DIR)/benchmarks/run.py ]; then cd $(MODULE_DIR) && $(BIN)/python benchmarks/run.py; \
	 else echo "$(PKG): no benchmark yet (see README: what is not built yet)"; fi

run: install
	@if [ -n "$(RUN_CMD)" ]; then cd $(MODULE_DIR) && $(RUN_CMD); \
	 else echo "$(PKG): nothing to run yet (see README: what is not built yet)"; fi

docs: install
	@if [ -f $(MODULE_DIR)/mkdocs.yml ]; then cd $(MODULE_DIR) && $(BIN)/mkdocs build --strict --site-dir $(MODULE_DIR)/site; \
	 else echo "$(PKG): no API docs yet"; fi
