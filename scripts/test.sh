#!/usr/bin/env bash
# The one test command of the project (CI runs it through .ci/run):
#
#     scripts/test.sh
#
# Needs Rust (rustfmt and clippy included) and python3 with pip; no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*" >&2; }

step "NVRTC and ptxas (scripts/setup-cuda.sh)"
eval "$(scripts/setup-cuda.sh)"

step "SmolLM2-135M-Instruct for the decoder tests (scripts/fetch-model.sh, cached)"
export TESSERA_MODEL_DIR=${TESSERA_MODEL_DIR:-$HOME/.cache/tessera/models}
scripts/fetch-model.sh "$TESSERA_MODEL_DIR" >/dev/null

# Snapshot tests must fail on a mismatch or a missing snapshot instead of writing new
# files: INSTA_UPDATE=no never writes, CI=true is what insta treats as a CI run.
export INSTA_UPDATE=no
export CI=true
unset INSTA_FORCE_PASS

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "rustdoc (broken or ambiguous intra-doc links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# A throwaway PostgreSQL cluster for the tuning-db suite (tuning-db/tests/db.rs runs every
# case on SQLite and on PostgreSQL; with CI set the PostgreSQL half is required). initdb
# into a temp dir as user postgres, trust auth, fsync off, port 55432 (or the next free
# one); stopped and deleted on exit. Skipped when TESSERA_TEST_POSTGRES_URL is already set.
PG_TMP=""
stop_postgres() {
    if [[ -n "$PG_TMP" ]]; then
        as_postgres "$PGBIN/pg_ctl" -D "$PG_TMP/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_TMP"
    fi
}
as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
start_postgres() {
    local initdb port
    initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$initdb" ]]; then
        step "installing PostgreSQL (apt-get install postgresql)"
        local sudo=""
        [[ $(id -u) -eq 0 ]] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
        initdb=$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    fi
    PGBIN=$(dirname "$initdb")
    PG_TMP=$(mktemp -d /tmp/tessera-pg.XXXXXX)
    trap stop_postgres EXIT
    [[ $(id -u) -eq 0 ]] && chown postgres: "$PG_TMP"
    as_postgres "$PGBIN/initdb" -D "$PG_TMP/data" -A trust -U postgres --no-sync -E UTF8 >"$PG_TMP/initdb.log" 2>&1 \
        || { cat "$PG_TMP/initdb.log" >&2; return 1; }
    for port in $(seq 55432 55451); do
        if as_postgres "$PGBIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/log" -w -t 20 \
            -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null; then
            as_postgres "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres tessera_test
            export TESSERA_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/tessera_test"
            step "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') at $TESSERA_TEST_POSTGRES_URL"
            return 0
        fi
        echo "port $port busy? $(tail -n 2 "$PG_TMP/log" 2>/dev/null)" >&2
    done
    return 1
}
if [[ -n "${TESSERA_TEST_POSTGRES_URL:-}" ]]; then
    step "PostgreSQL: using TESSERA_TEST_POSTGRES_URL=$TESSERA_TEST_POSTGRES_URL"
else
    step "throwaway PostgreSQL for the tuning-db tests"
    start_postgres
fi

step "tests (cargo test)"
cargo test --workspace

# The authoring examples check themselves against a reference on the CPU interpreter
# (and on the GPU when there is one); cargo test has already built them.
for example in vector_add row_softmax matmul flash_decode; do
    step "example: $example"
    cargo run -q --example "$example"
done

step "all checks passed"
