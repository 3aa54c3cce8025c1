#!/usr/bin/env bash
# One command from a fresh clone: install, index a folder of photos, search it with a photo.
# Usage: ./quickstart.sh PHOTO_FOLDER [QUERY_PHOTO]
#   Each photo's subject is labelled with its folder's name (Person_Name/photo.jpg, as in LFW).
#   The index lives in FACESEARCH_DATA_DIR (default: ~/.local/share/facesearch).
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -lt 1 ]; then
  echo "usage: ./quickstart.sh PHOTO_FOLDER [QUERY_PHOTO]" >&2
  exit 2
fi
scripts/setup.sh
export OPENBLAS_NUM_THREADS=1
.venv/bin/facesearch index "$1" --person-from-folder || [ $? -eq 3 ]   # 3: done, some files failed
query=${2:-$(find "$1" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort | head -n 1)}
echo "searching with $query"
.venv/bin/facesearch search "$query" --k 10
