"""Stage `generate`: built-in math problems -> tokenized, drift-checked TiS samples.

Writes ``data/generate/{train,validation}.parquet`` and ``stats.json`` (see tasks/core/dataset.py).
The `synthesize` stage produces the same columns plus speech; training stages read either.

    python -m tasks.generate
"""

from __future__ import annotations

import collections
import logging
import random
import time
from pathlib import Path

from tasks.core.params import ROOT, Params, load_params, to_dict

STAGE = "generate"
OUT = ROOT / "data" / STAGE
TOKENIZER = ROOT / "checkpoints" / "init_model" / "tokenizer"
log = logging.getLogger(STAGE)


def run(p: Params, out_dir: Path = OUT, tokenizer_dir: Path = TOKENIZER) -> dict:
    from models.drift import DriftError, tokenize_sample
    from models.format import FormatError, interleave
    from models.tokenizer import control_ids, load_tokenizer, text_prompt
    from tasks.core.dataset import write_dataset
    from tasks.synth.builtin import generate_problems

    t0 = time.time()
    g = p.generate
    tok = load_tokenizer(tokenizer_dir)
    ids = control_ids(tok)
    rejected: collections.Counter[str] = collections.Counter()
    rows = []
    for i, prob in enumerate(generate_problems(g.num_problems, seed=g.seed)):
        try:
            t = tokenize_sample(tok, prob.question, prob.response, prob.reasoning, p.schedule)
            lay = interleave(text_prompt(tok, prob.question), t.response_ids, t.reasoning_ids, ids,
                             p.schedule, min_block=t.min_block, delay_eos=True)
        except DriftError:
            rejected["drift"] += 1
            continue
        except FormatError:
            rejected["format"] += 1
            continue
        if len(lay) > g.max_len:
            rejected["too_long"] += 1
            continue
        rows.append({**prob.to_dict(), "spoken_question": prob.question, **vars(t)})
        if (i + 1) % 500 == 0:
            log.info("generate: %d/%d problems", i + 1, g.num_problems)
    random.Random(g.seed).shuffle(rows)
    n_val = max(1, round(len(rows) * g.validation_fraction))
    splits = {"validation": rows[:n_val], "train": rows[n_val:]}
    stats = {
        "problems": g.num_problems,
        "kept": len(rows),
        "train": len(splits["train"]),
        "validation": n_val,
        "rejected": dict(rejected),
        "kinds": dict(collections.Counter(r["kind"] for r in rows)),
        "seconds": round(time.time() - t0, 2),
    }
    write_dataset(out_dir, splits, stats)
    return stats


METRICS = ROOT / "metrics" / "generate.json"


def main() -> None:
    from tasks.core.tracking import stage_run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = load_params()
    with stage_run(STAGE, p.mlflow.experiment, {"generate": to_dict(p.generate), "schedule": to_dict(p.schedule)}) as tr:
        stats = run(p)
        from tasks.core.stage_main import write_json_atomic

        write_json_atomic(METRICS, stats)
        tr.metrics({"data/kept": stats["kept"], "data/train": stats["train"], "data/validation": stats["validation"],
                    **{f"data/rejected_{k}": v for k, v in stats["rejected"].items()}})
        tr.artifact(OUT / "stats.json")
    log.info("kept %d of %d problems (rejected %s)", stats["kept"], stats["problems"], stats["rejected"])


if __name__ == "__main__":
    main()
