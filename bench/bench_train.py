"""Training throughput: the pipeline trainer (DeepSpeed engine, stage table, checkpoints, logging)
against a bare torch loop on the same tiny model, batches and steps, in one run.

    .venv/bin/python -m bench.bench_train [--steps 30] [--batch 8] [--stage text_tis]

Prints both tokens/s and their ratio and writes bench/results/train.json. On CPU only: the 3B MFU
measurement needs a GPU (none here).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train.json"


def bare_loop(stage: str, p, sp, data_dir: Path, init_dir: Path, fmt: str = "tis") -> dict:
    """The same steps as the trainer, with nothing but torch: forward, backward, clip, AdamW, schedule."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    from models.modules import set_trainable
    from models.tokenizer import load_tokenizer
    from tasks.core import checkpoint as ck
    from tasks.core.dataset import load_samples
    from tasks.core.stages import spec as get_spec
    from tasks.core.trainer import LOSSES, _lr_lambda, collate, global_batch, make_examples, n_targets

    spec = get_spec(stage)
    src = ck.latest(init_dir)
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(str(src / "model"), dtype=torch.float32)
    tok = load_tokenizer(src / "tokenizer")
    examples, _ = make_examples(load_samples(data_dir, "train"), tok, p, spec, sp, fmt, data_dir)
    set_trainable(model, spec.trainable)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=sp.lr, weight_decay=sp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(sp))
    loss_fn = LOSSES[spec.t.loss]
    torch.manual_seed(p.seed)
    model.train()
    tokens, history = 0, []
    t0 = time.time()
    for step in range(sp.steps):
        idx = global_batch(step, sp.batch_size, len(examples), p.seed)
        mb = [examples[i] for i in idx]
        total = max(1, sum(n_targets(e) for e in mb))
        batch = collate(mb, tok.pad_token_id)
        loss = loss_fn(model, batch) / total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, p.trainer.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        history.append(round(loss.item(), 5))
    el = time.time() - t0
    return {"tokens_per_s": tokens / el, "seconds": el, "tokens": tokens, "losses": history}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--stage", default="text_tis")
    ap.add_argument("--problems", type=int, default=48, help="spoken problems in the throwaway dataset")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(ROOT / "tests"))
    import tempfile

    import torch

    from audio_data import tiny_setup
    from tasks.core.params import StageParams
    from tasks.core.trainer import train

    tiny = tiny_setup(args.problems)
    p = replace(tiny.p, trainer=replace(tiny.p.trainer, log_every=10**6, checkpoint_every=10**6))
    sp = StageParams(steps=args.steps, batch_size=args.batch, lr=1e-3, warmup_steps=2, max_len=1024)
    bare = bare_loop(args.stage, p, sp, tiny.data, tiny.init)
    with tempfile.TemporaryDirectory() as d:
        res = train(args.stage, p, sp, tiny.data, tiny.init, Path(d) / "out", codec_dir=tiny.codec)
    ours = {"tokens_per_s": res.tokens_per_s, "seconds": res.seconds, "losses": [l for _, l in res.history]}
    out = {
        "stage": args.stage, "steps": args.steps, "batch_size": args.batch,
        "device": "cpu", "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "trainer_tokens_per_s": round(ours["tokens_per_s"], 1), "bare_tokens_per_s": round(bare["tokens_per_s"], 1),
        "ratio": round(ours["tokens_per_s"] / bare["tokens_per_s"], 3),
        "max_loss_diff": max(abs(a - b) for a, b in zip(ours["losses"], bare["losses"])),
        "note": "tiny model on CPU; no GPU was available for the 3B MFU measurement",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
