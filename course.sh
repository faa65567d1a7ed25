#!/usr/bin/env bash
# One entry point for learners, instructors and CI.
#   bash course.sh start          set everything up (idempotent) and open JupyterLab on notebooks/
#   bash course.sh setup          only the set-up: .venv, torch==2.13.0 (CPU), course package, offline assets, kernel
#   bash course.sh run NB [DIR]   execute one notebook headless (NB = 01, 02, ... or a path); writes an HTML copy
#   bash course.sh test           the full test suite (pytest for course_utils + nbval over solutions/)
#   bash course.sh refresh NB     maintainers: re-execute a solution notebook in place, clean it, regenerate notebooks/
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY="$VENV/bin/python"
TORCH_PIN="torch==2.13.0"
# Offline by default: the small profile needs no hub, and without these the libraries retry for ~50 s.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false

setup() {
  if [ ! -x "$PY" ]; then python3 -m venv "$VENV"; fi
  # torch first and pinned: the package only asks for torch>=2.4, which would otherwise pull a multi-GB CUDA build.
  if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    "$PY" -m pip install -q --disable-pip-version-check "$TORCH_PIN"
  fi
  "$PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
  "$PY" -m course_utils.core.assets fetch
  "$PY" -m ipykernel install --user --name kd-course --display-name "Python (kd-course)" >/dev/null
  echo "set-up complete: activate with 'source $VENV/bin/activate'"
}

resolve_nb() {  # 01 -> solutions/01_*.ipynb (or notebooks/ with a second arg)
  local nb="$1" dir="${2:-solutions}"
  if [ -f "$nb" ]; then echo "$nb"; return; fi
  local hit; hit=$(ls "$dir"/"$nb"_*.ipynb 2>/dev/null | head -n1)
  [ -n "$hit" ] || { echo "no notebook '$nb' in $dir/" >&2; exit 2; }
  echo "$hit"
}

cmd="${1:-start}"; shift || true
case "$cmd" in
  setup) setup ;;
  start) setup; exec "$VENV/bin/jupyter" lab notebooks/ ;;
  lab) exec "$VENV/bin/jupyter" lab notebooks/ ;;
  run)
    nb=$(resolve_nb "${1:?usage: bash course.sh run NB [solutions|notebooks]}" "${2:-solutions}")
    mkdir -p build/html
    "$VENV/bin/jupyter" nbconvert --to html --execute --ExecutePreprocessor.timeout=1800 \
      --ExecutePreprocessor.kernel_name=python3 --output-dir build/html "$nb"
    ;;
  refresh)
    nb=$(resolve_nb "${1:?usage: bash course.sh refresh NB}")
    start=$(date +%s)
    "$VENV/bin/jupyter" nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1800 \
      --ExecutePreprocessor.kernel_name=python3 "$nb"
    echo "executed $nb in $(( $(date +%s) - start )) s"
    "$PY" -m course_utils.nbtool clean "$nb"
    "$PY" -m course_utils.nbtool build
    ;;
  test)
    [ -x "$PY" ] || setup
    "$PY" -m pytest "$@"
    ;;
  *) echo "unknown command '$cmd' (start|setup|lab|run|refresh|test)" >&2; exit 2 ;;
esac
