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
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACT = re.compile(r"(?<![\d*+\-])(\d)((?:[+\-*]\d+)+)=(\d+)")


def facts(reasoning: str) -> list[tuple[int, int, bool]]:
    """(start char, end char, arithmetic right) of each one-digit column fact in ``reasoning``."""
    out = []
    for m in FACT.finditer(reasoning):
        lhs = m.group(1) + m.group(2)
        terms = re.findall(r"[+\-*]?\d+", lhs)
        if any(len(t.lstrip("+-*")) > 1 and t.lstrip("+-*") != "10" for t in terms):
            continue  # a multi-digit operand: a header (47+38:) or a sum of partials, not a column fact
        try:
            want = eval(lhs, {"__builtins__": {}})  # digits and + - * only (the regex)
        except SyntaxError:
            continue
        out.append((m.start(), m.end(), want == int(m.group(3))))
    return out


def split_by_block(tokenizer, reasoning: str, think: int) -> dict[str, list[int]]:
    """{"cut": [right, total], "uncut": [right, total]} over the facts of one reasoning."""
    enc = tokenizer(reasoning, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    res = {"cut": [0, 0], "uncut": [0, 0]}

    def token_at(c: int) -> int:
        return max((i for i, (a, b) in enumerate(offsets) if a <= c < max(b, a + 1)), default=0)

    for start, end, ok in facts(reasoning):
        first, last = token_at(start), token_at(end - 1)
        key = "cut" if first // think != last // think else "uncut"
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
