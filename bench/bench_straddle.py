"""Where TiS loses its arithmetic: column facts of the scratchpad cut by a speak block, against uncut ones.

A TiS sequence gives the reasoning ``think`` slots a block, then ``speak`` response slots (``models.format``), so
a column fact such as ``4+8+1=13`` is cut when its tokens fall in two blocks: ``4+8+1= <|speak|> r r <|think|>
13``. This reads the answers of an evaluation (``reports/evaluate/<format>/predictions.jsonl``) or of
``bench.bench_stage`` (its ``answers``), finds every one-digit column fact the model wrote (``a+b=c``,
``a+b+1=c``, ``a-b=c``, ``a-b+10=c``, ``a-1-b+10=c``, ``a*b=c``), checks its arithmetic on the digits the model
itself wrote, and splits the facts by whether the reasoning tokens from the fact's first operand to its last
result digit fall in one block or two (token index // ``think``). For think-first the split is only a control:
the same facts, had they been laid out in TiS blocks (longer facts are cut more often, and are harder).

    .venv/bin/python -m bench.bench_straddle --tokenizer checkpoints/init_model/tokenizer \\
        reports/evaluate/tis/predictions.jsonl reports/evaluate/think_first/predictions.jsonl

Prints and writes JSON (bench/results/straddle.json): per file, facts right / total, cut and uncut.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def split_by_block(tokenizer, reasoning: str, think: int) -> dict[str, list[int]]:
    """{"cut": [right, total], "uncut": [right, total]} over the column facts of one reasoning."""
    from tasks.synth.blocks import column_facts, is_cut, token_spans

    facts = column_facts(reasoning)
    res = {"cut": [0, 0], "uncut": [0, 0]}
    for (first, last), (_, _, ok) in zip(token_spans(tokenizer, reasoning, [(a, b) for a, b, _ in facts]), facts):
        key = "cut" if is_cut(first, last, think) else "uncut"
        res[key][0] += ok
        res[key][1] += 1
    return res


def answers(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text()).get("answers", [])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_straddle", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="predictions.jsonl of an evaluation, or a bench_stage JSON")
    ap.add_argument("--tokenizer", required=True, help="the model's tokenizer dir (checkpoints/init_model/tokenizer)")
    ap.add_argument("--think", type=int, default=8, help="think slots a block (schedule.think)")
    ap.add_argument("--input", default="text", help="answers of this input only (text, audio; '' = all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "straddle.json"))
    args = ap.parse_args(argv)
    from models.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    result = {"think": args.think, "input": args.input, "files": {}}
    for f in args.files:
        tot = {"cut": [0, 0], "uncut": [0, 0]}
        n = 0
        for a in answers(Path(f)):
            if a.get("sweep") or (args.input and a.get("input", "text") != args.input) or not a.get("reasoning"):
                continue
            n += 1
            for k, (r, t) in split_by_block(tok, a["reasoning"], args.think).items():
                tot[k][0] += r
                tot[k][1] += t
        row = {"answers": n, **{k: {"right": r, "facts": t, "share_right": round(r / t, 3) if t else None}
                                for k, (r, t) in tot.items()}}
        result["files"][f] = row
        print(f"{f}: {n} answers; facts cut by a block {row['cut']['right']}/{row['cut']['facts']} right "
              f"({row['cut']['share_right']}), uncut {row['uncut']['right']}/{row['uncut']['facts']} "
              f"({row['uncut']['share_right']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
