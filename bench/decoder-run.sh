#!/usr/bin/env bash
# The decoder's GPU run (issue 7), from the repo root on the GPU machine:
#   release binary .bin/tessera, model .model/SmolLM2-135M-Instruct.Q4_1.gguf (joined from its
#   two parts), the gguf wheel and its pure-Python dependencies in .whl/ (for the HF peer).
# 1. tessera doctor; 2. tessera decoder-check (golden logits/ids vs the fixture and the CPU
# path, chat answer, decode speed at 1K/8K x batch 1/8, Llama-3-8B shapes at 32K/128K);
# 3. tessera generate --device cuda (the chat answer, streamed); 4. the HF transformers peer
# (static cache) on the same prompts; 5. a side-by-side summary. Logs and JSON under $OUT.
# PHASE=tessera runs 1-3 only, PHASE=peer 4-5 only (each fits one 10-minute device call).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=${TESSERA_BIN:-.bin/tessera}
MODEL=${MODEL:-.model/SmolLM2-135M-Instruct.Q4_1.gguf}
PHASE=${PHASE:-all}
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
echo "$SHA  $MODEL" | sha256sum -c --quiet || { echo "error: $MODEL is missing or has the wrong sha256"; exit 1; }
rc=0
if [ "$PHASE" != peer ]; then
    $BIN doctor >"$OUT/doctor.log" 2>&1
    echo "== tessera decoder-check"
    timeout 480 $BIN decoder-check --model "$MODEL" --json "$OUT/decoder.json" --prompts "$OUT/decoder_prompts.json" \
        2>&1 | tee "$OUT/decoder-check.log"
    rc=${PIPESTATUS[0]}
    echo "== decoder-check exit code: $rc"
    echo "== tessera generate --device cuda --chat"
    timeout 60 $BIN generate --model "$MODEL" --device cuda --chat --prompt "What is the capital of France?" \
        --max-new-tokens 24 2>&1 | tee "$OUT/generate.log"
    echo "== generate exit code: ${PIPESTATUS[0]}"
fi
if [ "$PHASE" != tessera ]; then
    if [ ! -f "$OUT/decoder_prompts.json" ]; then
        echo "error: $OUT/decoder_prompts.json is missing (run PHASE=tessera first with the same OUT)"
        exit 1
    fi
    python3 -c "import gguf" 2>/dev/null || python3 -m pip install --quiet --no-index --find-links .whl gguf \
        >"$OUT/pip.log" 2>&1 || { echo "pip install of gguf failed:"; tail -5 "$OUT/pip.log"; }
    echo "== HF transformers peer (static cache)"
    PYTHONUNBUFFERED=1 timeout "${PEER_TIMEOUT:-420}" python3 bench/peers/decoder_peer.py "$MODEL" \
        "$OUT/decoder_prompts.json" "$OUT/decoder_peer.json" "${PEER_BATCHES:-1,8}" 2>"$OUT/decoder_peer.err" \
        | tee "$OUT/decoder_peer.log"
    echo "== peer exit code: ${PIPESTATUS[0]} (stderr in decoder_peer.err)"
    [ -f "$OUT/decoder.json" ] && python3 bench/summary_decoder.py "$OUT/decoder.json" "$OUT/decoder_peer.json"
fi
exit "$rc"
