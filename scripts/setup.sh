#!/usr/bin/env bash
# Installs divqat with its test tools into .venv, and the embedded Fashion-MNIST when it is missing.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${DIVQAT_DATA:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's dataset-fashion-mnist" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST is missing; run 'sudo apt-get install dataset-fashion-mnist'," \
      "or set DIVQAT_DATA to a folder holding its four IDX .gz files" >&2
  fi
fi

# PostgreSQL's server, for the tests of `divqat serve --db postgresql://...` (they skip, saying
# why, where it cannot be installed).
if ! command -v pg_ctl >/dev/null && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's postgresql" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "setup: PostgreSQL is missing; its tests will skip ('sudo apt-get install postgresql' to run them)" >&2
  fi
fi

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
# torch is pinned in pyproject.toml: a loose spec would let pip pull a multi-GB CUDA build.
# The ray, postgres and art extras are installed too, so that the tests run the Ray executor,
# the server on PostgreSQL and the Adversarial Robustness Toolbox on both sides.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,ray,postgres,art]'
