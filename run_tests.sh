#!/usr/bin/env bash
# Install (idempotent) and run the default test suite. Extra arguments go to pytest.
# The Elasticsearch contract tests run too when FACESEARCH_ES_URL names a cluster.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test
# Lint and format first (ruff.toml): a minute of tests is not spent on a tree that fails them.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export OPENBLAS_NUM_THREADS=1
exec .venv/bin/python -m pytest "$@"
