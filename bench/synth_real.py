"""Real-data check of the text half of synthesis: kept and rejected records per source, by reason.

    .venv/bin/python -m bench.synth_real [--source gsm8k=PATH] [--source svamp=PATH] [--source aqua=PATH]
                                          [--out bench/results/synth_real.json]

Default sources: the shared GSM8K test set and SVAMP (``../shared/data`` or ``OMNI_TIS_SHARED_DATA``).
Each record is decomposed, spoken and verified exactly as the synthesize stage does, without TTS
(``Rules(with_audio=False)``). Prints and writes per source: records, kept, rejected by reason,
crashes (``error_*``), value-changing readings among the kept (the spoken question or response read
back to other numbers: must be 0) and kept texts that still speak digits, symbols or special tokens.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    root = Path(__file__).resolve().parents[1]
    data = Path(os.environ.get("OMNI_TIS_SHARED_DATA") or root.parent / "shared" / "data")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", action="append", default=[], help="KIND=PATH (repeatable)")
    ap.add_argument("--out", default="bench/results/synth_real.json")
    ap.add_argument("--examples", type=int, default=0, help="print this many rejected examples per reason")
    args = ap.parse_args(argv)
    specs = [s.split("=", 1) for s in args.source] or [["gsm8k", str(data / "gsm8k" / "test.jsonl")],
                                                        ["svamp", str(data / "svamp" / "SVAMP.json")]]

    import pandas as pd

    from models.tokenizer import train_bpe
    from tasks.core.params import load_params
    from tasks.synth.builtin import generate_problems
    from tasks.synth.pipeline import Rules, process_batch
    from tasks.synth.readback import mismatch
    from tasks.synth.sources import collect

    probs = generate_problems(800, seed=10_000)
    tok = train_bpe((t for q in probs for t in (q.question, q.reasoning, q.response)), 1000)
    sources = [{"kind": k, "path": p} for k, p in specs]
    cfg = load_params(overrides={"synthesize": {"sources": sources, "max_len": 4096, "max_question_words": 400,
                                                "max_response_words": 80}}).synthesize
    records, per_source, skipped = collect(cfg)
    out = process_batch(pd.DataFrame(records), Rules(cfg, tok, with_audio=False))
    bad_spoken = re.compile(r"\d|[<>$%/=*\\{}^_#&@|\[\]`~]|endoftext|im_start|im_end|\bs\b>")
    report: dict = {}
    for name in per_source:
        rows = out[out.id.str.startswith(name + "-")]
        kept = rows[rows.reject == ""]
        rej = collections.Counter(rows[rows.reject != ""].reject)
        changed = sum(bool(mismatch(r.question, r.spoken_question) or mismatch(r.response, r.spoken_response))
                      for r in kept.itertuples())
        unspoken = sum(bool(bad_spoken.search(r.spoken_question) or bad_spoken.search(r.spoken_response)
                            or re.search(r"<\|?\w+\|?>", r.reasoning)) for r in kept.itertuples())
        report[name] = {"records": int(per_source[name]), "skipped": dict(skipped[name]), "kept": int(len(kept)),
                        "rejected": dict(sorted(rej.items())),
                        "crashes": sum(v for k, v in rej.items() if k.startswith("error_")),
                        "value_changing_kept": changed, "symbols_or_tokens_spoken_kept": unspoken}
        print(f"{name}: {json.dumps(report[name])}")
        for reason in sorted(rej):
            for r in rows[rows.reject == reason].head(args.examples).itertuples():
                print(f"  [{reason}] {r.detail[:160]}\n     Q: {r.question[:200]}\n     S: {r.spoken_question[:200]}"
                      f"\n     R: {r.response[:200]}\n     SR: {r.spoken_response[:200]}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
