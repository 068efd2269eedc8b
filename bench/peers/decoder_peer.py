"""HF transformers peer of `tessera decoder-check`: greedy generate with a static cache
(generate compiles the forward itself; shared/H200.md) on the same GGUF and the same
prompt ids, batch 1 and 8, 128 new tokens.

usage: decoder_peer.py MODEL.gguf PROMPTS.json OUT.json [batches, default 1,8]
PROMPTS.json is `tessera decoder-check --prompts`: {"CONTEXT": [ids]}; each prompt is run
with 128 new tokens (min = max, so end-of-text does not stop it). A logits processor
records a synchronised timestamp per step: prefill = generate start -> first step,
decode tokens/s = batch * (steps - 1) / (last step - first step). The first generate of
each shape compiles and is not timed. One JSON object per line; all of them in OUT.json
(rewritten after every configuration, so a timeout keeps what finished).
"""
import json
import os
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

NEW_TOKENS = 128


class StepClock(LogitsProcessor):
    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        return scores


def run(model, ids, batch):
    x = torch.tensor([ids] * batch, device="cuda")
    clock = StepClock()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(
        x,
        attention_mask=torch.ones_like(x),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        logits_processor=LogitsProcessorList([clock]),
        pad_token_id=0,
    )
    torch.cuda.synchronize()
    t = clock.times
    steps = len(t)
    return {
        "prefill_ms": (t[0] - t0) * 1e3,
        "steps": steps,
        "decode_tokens_per_s": batch * (steps - 1) / (t[-1] - t[0]) if steps > 1 else None,
        "ms_per_step": (t[-1] - t[0]) * 1e3 / (steps - 1) if steps > 1 else None,
        "generated": out.shape[1] - x.shape[1],
    }


def main(model_path, prompts_path, out_path, batches):
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(model_path)), gguf_file=os.path.basename(model_path), dtype=torch.bfloat16
    )
    model = model.cuda().eval()
    model.generation_config.cache_implementation = "static"
    print(json.dumps({"loaded_s": time.time() - t, "transformers": transformers.__version__, "torch": torch.__version__}), flush=True)
    prompts = json.load(open(prompts_path))
    results = []
    for ctx, ids in sorted(prompts.items(), key=lambda kv: int(kv[0])):
        for b in batches:
            r = {"peer": "hf-static", "context": int(ctx), "batch": b, "prompt_tokens": len(ids)}
            try:
                with torch.no_grad():
                    w = time.time()
                    run(model, ids, b)  # compiles for this shape
                    r["warmup_s"] = time.time() - w
                    r.update(run(model, ids, b))
            except Exception as e:  # noqa: BLE001 - report and go on
                r["error"] = str(e)[:400]
            results.append(r)
            print(json.dumps(r), flush=True)
            json.dump(results, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    batches = [int(b) for b in (sys.argv[4] if len(sys.argv) > 4 else "1,8").split(",")]
    main(sys.argv[1], sys.argv[2], sys.argv[3], batches)
