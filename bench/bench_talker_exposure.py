"""What the talker knows against what it says: teacher-forced against free-running speech, heard by ASR.

    .venv/bin/python -m bench.bench_talker_exposure --model checkpoints/talker/tis/step-00000320 \
        [--codec checkpoints/codec] [--data data/synthesize] [--n 12] [--out bench/results/talker_exposure.json]

On ``--n`` validation rows of the talker stage (spoken question, its reference response and that
response's codec ids), over the *same* thinker states, the talker's speech is decoded by the codec and
transcribed by the evaluation's ASR (tasks/evaluate/intelligibility.py), word recall against the response:

- ``truth``: the codec's own codes of the clip (the ceiling);
- ``teacher_forced_aligned`` / ``teacher_forced_estimated``: per codec id, the talker's argmax given the
  *true* previous ids, with each token on its aligned frames (``response_starts``) or spread by estimate;
- ``free_greedy`` / ``free_sampled``: the talker running on its own output (``generate_codes``), greedy or
  sampled at the session's temperature and top-k.

A talker whose teacher-forced speech is heard but whose free-running speech is not suffers exposure bias
(README, "Does the talker speak yet?").
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/talker/tis", help="a step dir or a stage dir (its newest step)")
    ap.add_argument("--codec", default="checkpoints/codec")
    ap.add_argument("--data", default="data/synthesize")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/talker_exposure.json")
    args = ap.parse_args(argv)

    import torch

    from models.asr import word_recall
    from models.atomic import write_json
    from models.losses import thinker_attention, thinker_position_ids
    from models.session import TALKER_TOP_K, Engine, talker_temperature
    from models.talker import build_talker_inputs, codebook_mask, generate_codes, talker_forward, thinker_states
    from tasks.core.checkpoint import latest
    from tasks.core.examples import StageData, collate
    from tasks.core.params import load_params
    from tasks.core.stages import spec
    from tasks.evaluate.intelligibility import Chain, spoken_text, response_voice, training_responses

    torch.set_num_threads(2)
    p = load_params()
    step = latest(args.model)
    engine = Engine.load(step, args.codec)
    model, tok, codec = engine.model, engine.tokenizer, engine.codec
    temperature = talker_temperature(model)  # as the session
    data = StageData(args.data, "validation", tok, p, spec("talker"), p.stage("talker"), "tis", codec_dir=args.codec)
    chain = Chain.build(training_responses(args.data), codec, Path(args.out).parent / "asr", response_voice(args.data))
    eos = model.talker.codec_eos_token

    def heard(ids: list[int], spoken: str) -> tuple[float, str]:
        ids = ids[: len(ids) // codec.codebooks * codec.codebooks]
        if not ids:
            return 0.0, ""
        hyp = chain.asr.transcribe(codec.decode(codec.unflatten(ids)), codec.sample_rate)
        return round(word_recall(spoken, hyp), 4), hyp

    rows = []
    for i in range(len(data)):
        if len(rows) >= args.n:
            break
        e = data.example(i)
        if isinstance(e, str):
            continue
        data.load_features([e])
        b = collate([e], tok.pad_token_id)
        spoken = spoken_text(data.rows[i]["response"])
        audio = {k: b[k] for k in ("input_features", "feature_attention_mask") if k in b}
        out = {"row": i, "spoken": spoken, "frames": len(e.codes) // codec.codebooks}
        with torch.no_grad():
            h, em = thinker_states(model, input_ids=b["input_ids"], attention_mask=thinker_attention(model, b),
                                   position_ids=thinker_position_ids(model, b), **audio)
            out["truth"] = heard(e.codes, spoken)
            for name, bounds in (("teacher_forced_aligned", [e.bounds]), ("teacher_forced_estimated", None)):
                if name.endswith("aligned") and e.bounds is None:
                    continue
                ti = build_talker_inputs(model, h, em, b["roles"], [e.codes], codebooks=codec.codebooks,
                                         input_ids=b["input_ids"], bounds=bounds)
                logits = talker_forward(model, ti)[0]  # after the head row: id s at s + 1, or frame f at f + 1
                per_frame = ti.labels.ndim == 3  # a talker that reads no previous codes says a frame per step
                pred = []
                for s in range(len(e.codes)):
                    allowed = codebook_mask(s, logits.shape[-1], eos, codec.codebook_sizes)
                    allowed[eos] = False
                    row = logits[s // codec.codebooks + 1] if per_frame else logits[s + 1]
                    pred.append(int(row.masked_fill(~allowed, float("-inf")).argmax()))
                out[name] = heard(pred, spoken)
            for name, kw in (("free_greedy", {}), ("free_sampled", {"do_sample": True, "temperature": temperature,
                                                                     "top_k": TALKER_TOP_K,
                                                                     "generator": torch.Generator().manual_seed(args.seed + i)})):
                ids = generate_codes(model, h, em, b["roles"], max_new_tokens=len(e.codes) * 2,
                                     codebook_sizes=codec.codebook_sizes, input_ids=b["input_ids"], **kw)
                out[name] = heard(ids, spoken)
        rows.append(out)
        print(json.dumps({k: v[0] if isinstance(v, tuple) else v for k, v in out.items() if k != "spoken"}), flush=True)
    keys = [k for k in ("truth", "teacher_forced_aligned", "teacher_forced_estimated", "free_greedy", "free_sampled")
            if any(k in r for r in rows)]
    summary = {k: round(statistics.fmean(r[k][0] for r in rows if k in r), 4) for k in keys}
    result = {"model": str(step), "answers": len(rows), "recall": summary,
              "rows": [{k: (v if not isinstance(v, tuple) else {"recall": v[0], "transcript": v[1]}) for k, v in r.items()}
                       for r in rows]}
    print("recall", json.dumps(summary))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
