"""One stage retrained from a pipeline's own checkpoints, then scored: the fast loop for what the model learns.

Trains ``--stage`` (``pretrain``, ``text_tis`` or ``acoustic_tis``) from the upstream checkpoint and the data of a
finished ``make pipeline`` (``--root``, the repository by default), with params.yaml's settings and ``--set``
overrides, then answers the offline proxy (held-out generator seeds, minus the training questions) greedily
through the streaming session, asked spoken and as text, and prints accuracy per split and input. A stage takes
the minutes it takes in the pipeline; comparing two settings needs no rerun of everything before it.

    .venv/bin/python -m bench.bench_stage --stage acoustic_tis --format think_first --set acoustic_tis.text_fraction=0
    .venv/bin/python -m bench.bench_stage --stage text_tis --format tis --set text_tis.steps=1500 --inputs text

``--stage align`` scores what the thinker hears instead: ``--heard N`` spoken validation questions transcribed
(word recall, number-word recall, questions whose numbers all come out right; ``transcripts``). So does ``--stage
pretrain`` with ``model.transcribe_first``: its reasoning starts with what it heard (``model.transcript``).

    .venv/bin/python -m bench.bench_stage --stage align --set align.steps=1500 --heard 40
    .venv/bin/python -m bench.bench_stage --stage pretrain --set model.transcript=words --heard 40

``--stage talker`` trains the talker (from the pipeline's ``acoustic_tis`` and ``codec``) and scores what is heard
instead: ``--heard N`` spoken validation questions answered through the streaming session, the talker's speech
heard by the evaluation's ASR (``bench.bench_intelligibility``: recall of the talker against the response, its
chance level, the codec's ceiling), and the same talker over the true thinker states, teacher-forced and free-running
(``bench.bench_talker_exposure``).

    .venv/bin/python -m bench.bench_stage --stage talker --set talker.steps=640 --set talker.self_feed=0.5

Writes bench/results/stage-<stage>@<format>.json (settings, training seconds and losses, accuracy per split and
input, a few decoded answers). ``--from-stage`` scores a checkpoint as it is (no training), e.g. the pipeline's
``text_tis`` against its ``acoustic_tis``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STAGES = ("align", "pretrain", "text_tis", "acoustic_tis", "talker")


def overrides(sets: list[str]) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values read as YAML, as ``dvc exp run -S``)."""
    out: dict = {}
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set takes key.path=value, got {s!r}")
        *parents, leaf = key.strip().split(".")
        d = out
        for k in parents:
            d = d.setdefault(k, {})
            if not isinstance(d, dict):
                raise SystemExit(f"--set {s!r}: {k} is set to a value above")
        v = yaml.safe_load(value)
        if isinstance(v, str):  # YAML 1.1 reads 5e-3 as a string; YAML 1.2 (dvc's) as a number
            try:
                v = float(v)
            except ValueError:
                pass
        d[leaf] = v
    return out


def score(model_dir: Path, fmt: str, items: list, inputs: list[str], p, max_new: int) -> tuple[dict, list, list]:
    """Greedy answers to every item in every input form; accuracy per (split, input) and overall, and per split
    ``<split>/heard``: the share of spoken questions whose reasoning starts with every number of the question (the
    evaluation's ``heard_numbers``)."""
    from tasks.evaluate.decode import Job, decode
    from tasks.evaluate.summary import heard_numbers

    forms = [(it, inp) for it in items for inp in inputs]
    jobs = [Job(k, it.id, it.split, it.transcript, it.answer, fmt, p.schedule.speak, p.schedule.think, max_new, 0.0, 0,
                False, 8.0, False, it.audio if inp == "audio" else None, it.sample_rate, input=inp)
            for k, (it, inp) in enumerate(forms)]
    right: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    shown, every = [], []
    for (row, _), job in zip(decode(jobs, model_dir, None, what="bench_stage"), jobs):
        # None for a text question: only spoken ones count under <split>/heard
        heard = heard_numbers({"input": job.input, "question": job.transcript, "reasoning": row.get("reasoning", "")})
        for scope in (job.split, "overall"):
            right[f"{scope}/{job.input}"] += bool(row["correct"])
            total[f"{scope}/{job.input}"] += 1
            if heard is not None:
                right[f"{scope}/heard"] += heard
                total[f"{scope}/heard"] += 1
        every.append({"split": job.split, "input": job.input, "question": job.transcript, "gold": row["gold"],
                      "correct": bool(row["correct"]), "heard": heard,
                      "reasoning": row.get("reasoning", ""), "output": row["output"]})
        if len(shown) < 8 and job.split in ("short_digit", "single_step_reasoning"):
            shown.append({"input": job.input, "question": row["question"], "gold": row["gold"],
                          "output": row["output"][:300], "correct": bool(row["correct"])})
    return {k: round(100 * right[k] / total[k], 1) for k in sorted(total)}, shown, every


def _number_words() -> frozenset[str]:
    from tasks.synth.verbalize import _CARDINALS  # the words synthesis says numbers with

    return frozenset(_CARDINALS) | {"hundred", "thousand", "million", "billion", "point", "half", "quarter"}


NUMBER_WORDS = _number_words()


def transcript_scores(pairs: list[tuple[str, str]]) -> dict:
    """(said, transcript) pairs -> ``word_recall`` (share of the said words in the transcript, each counted as often
    as said), ``number_word_recall`` (the same for number words) and ``numbers_exact`` (pairs whose number words come
    out all right and in order: what a solution needs), in percent."""
    import collections as co
    import re

    def words(s: str) -> list[str]:
        return re.findall(r"[a-z]+", s.lower())

    def hits(ref: list[str], hyp: list[str]) -> int:
        have = co.Counter(hyp)
        return sum(min(c, have[w]) for w, c in co.Counter(ref).items())

    from models.tokenizer import numbers_as_digits
    from tasks.evaluate.summary import heard_numbers

    said = heard = said_n = heard_n = exact = all_numbers = said_d = heard_d = 0
    for ref, hyp in pairs:
        # numbers as digits in both (a digits transcript has no number words): the first sentence written
        ref_d, hyp_d = (re.findall(r"\d+", numbers_as_digits(t.lower())) for t in (ref, hyp.split("?")[0]))
        said_d, heard_d = said_d + len(ref_d), heard_d + hits(ref_d, hyp_d)
        # the evaluation's rule: the first numbers written, as digits, are the question's, in order
        all_numbers += bool(heard_numbers({"input": "audio", "question": ref.lower(), "reasoning": hyp.lower()}))
        ref_w, hyp_w = words(ref), words(hyp)
        ref_n, hyp_n = [w for w in ref_w if w in NUMBER_WORDS], [w for w in hyp_w if w in NUMBER_WORDS]
        said, heard = said + len(ref_w), heard + hits(ref_w, hyp_w)
        said_n, heard_n = said_n + len(ref_n), heard_n + hits(ref_n, hyp_n)
        exact += ref_n == hyp_n
    return {"word_recall": round(100 * heard / max(1, said), 1),
            "number_word_recall": round(100 * heard_n / max(1, said_n), 1),
            "number_recall": round(100 * heard_d / max(1, said_d), 1),
            "numbers_exact": round(100 * exact / max(1, len(pairs)), 1),
            "numbers_heard": round(100 * all_numbers / max(1, len(pairs)), 1)}


def scores_by_kind(pairs: list[tuple[str, str]], kinds: list[str]) -> dict:
    """``transcript_scores`` of the pairs of each kind (``kinds[i]`` names pair i's; unnamed ones only count overall),
    with ``questions``: how many pairs the kind has."""
    if len(kinds) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(kinds)} kinds: one kind per pair")
    return {k: transcript_scores([pr for pr, kk in zip(pairs, kinds) if kk == k]) | {"questions": kinds.count(k)}
            for k in sorted(set(kinds)) if k}


HEARD_TOKENS = {"digits": 80, "words": 120, "both": 200}  # enough for a built-in question's transcript (+ a column)


def transcripts(model_dir: Path, data: Path, n: int, max_new: int = 160) -> dict:
    """What ``align`` teaches: ``n`` spoken validation questions transcribed greedily by the thinker (audio prompt ->
    text to eos, as the stage trains it), scored against the words that were said (``transcript_scores``), over all
    of them and per kind of question (``by_kind``: a short arithmetic question is heard whole more often than a word
    problem)."""
    import pandas as pd
    import soundfile as sf
    import torch

    from models.audio import audio_prompt, collate_features, log_mel, n_audio_tokens
    from models.omni import load_checkpoint
    from models.tokenizer import control_ids

    model, tok = load_checkpoint(model_dir, torch.float32)
    model.eval()
    eos = control_ids(tok).eos
    pairs, kinds = [], []
    for _, r in pd.read_parquet(data / "validation.parquet").head(n).iterrows():
        wave, sr = sf.read(str(data / r["question_audio"]), dtype="float32")
        feats, _ = log_mel(wave, sr)
        x = torch.tensor([audio_prompt(tok, n_audio_tokens(feats.shape[1]))])
        with torch.inference_mode():
            y = model.thinker.generate(input_ids=x, attention_mask=torch.ones_like(x), **collate_features([feats]),
                                       max_new_tokens=max_new, do_sample=False, eos_token_id=eos,
                                       pad_token_id=tok.pad_token_id)
        pairs.append((r["spoken_question"] or r["question"], tok.decode(y[0, x.shape[1]:], skip_special_tokens=True)))
        kinds.append(r.get("kind") or "")
    return {"accuracy": transcript_scores(pairs), "questions": len(pairs), "by_kind": scores_by_kind(pairs, kinds),
            "examples": [{"said": a, "transcript": b} for a, b in pairs[:6]]}


def heard(model_dir: Path, root: Path, n: int, tmp: Path, modes: str = "after") -> dict:
    """A talker's speech heard by the evaluation's ASR: through the session (``bench_intelligibility``) and over
    the true thinker states (``bench_talker_exposure``); ``accuracy`` holds the recalls to print."""
    from bench import bench_intelligibility, bench_talker_exposure

    common = ["--model", str(model_dir), "--codec", str(root / "checkpoints" / "codec"),
              "--data", str(root / "data" / "synthesize"), "--n", str(n)]
    names = [m for m in modes.split(",") if m]
    session = bench_intelligibility.main(common + ["--modes", ",".join(names), "--out", str(tmp / "heard" / "session.json")])
    exposure = bench_talker_exposure.main(common + ["--out", str(tmp / "heard" / "exposure.json")])
    recalls = {}
    for m in names:
        s = session[m]["summary"]
        recalls.update({f"session {m}/{k}": s[k] for k in ("recall_talker", "recall_talker_chance",
                                                           "recall_resynthesis", "recall_reference")})
    recalls.update({f"true_states/{k}": v for k, v in exposure["recall"].items()})
    return {"accuracy": recalls, "session": {m: session[m]["summary"] for m in names}, "exposure": exposure["recall"]}


def with_stream_mask(start: Path, on: bool, clock: bool, tmp: Path) -> Path:
    """``start``, or a copy of its model and tokenizer with the stream mask (``models.streams``) turned on or off
    as ``model.stream_mask`` says (the pipeline sets it at init_model; a stage retrained here may try the other)."""
    import shutil

    cfg_path = start / "model" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    thinker = cfg["thinker_config"]
    if bool(thinker.get("stream_mask")) == bool(on) and bool(thinker.get("stream_clock")) == bool(on and clock):
        return start
    dst = tmp / start.name
    shutil.copytree(start / "model", dst / "model")
    shutil.copytree(start / "tokenizer", dst / "tokenizer")
    thinker["stream_mask"] = thinker.get("stream_markers") if on else None
    thinker["stream_clock"] = bool(on and clock)
    if on and not thinker["stream_mask"]:
        from transformers import AutoTokenizer

        from models.tokenizer import control_ids

        ids = control_ids(AutoTokenizer.from_pretrained(str(start / "tokenizer")))
        thinker["stream_mask"] = [ids.speak, ids.think]
    (dst / "model" / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_stage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(ROOT), help="a repository where make pipeline ran (data/, checkpoints/)")
    ap.add_argument("--stage", required=True, choices=STAGES)
    ap.add_argument("--format", default="tis", choices=["tis", "think_first"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="params override, e.g. text_tis.steps=1500 (repeatable)")
    ap.add_argument("--from-stage", default="", choices=("",) + STAGES,
                    help="score this stage's checkpoint from --root as it is, without training")
    ap.add_argument("--per-split", type=int, default=20, help="proxy questions per split")
    ap.add_argument("--inputs", default="audio,text", help="comma list of audio, text")
    ap.add_argument("--max-new", type=int, default=0, help="thinker positions per answer (0: evaluate.max_new_tokens)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--heard", type=int, default=12, help="talker: spoken validation questions heard by the ASR; align, pretrain (model.transcribe_first): questions transcribed")
    ap.add_argument("--heard-modes", default="after", help="talker: session modes (bench_intelligibility --modes), "
                    "e.g. after,temp:0")
    ap.add_argument("--score", default="", help="score this checkpoint dir as it is (a step dir or a stage dir), "
                    "without training")
    ap.add_argument("--init", default="", help="start training from this checkpoint dir instead of the upstream stage's "
                    "(e.g. another format's text_tis, to test what a stage inherits)")
    ap.add_argument("--keep", default="", help="train into this dir and keep its checkpoints (default: a temp dir), "
                    "e.g. for bench.bench_intelligibility --curve")
    ap.add_argument("--out", default="", help="JSON path (default bench/results/stage-<stage>@<format>.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from tasks.core.checkpoint import latest
    from tasks.core.params import load_params
    from tasks.core.stages import spec
    from tasks.core.trainer import train
    from tasks.evaluate.benchmarks import load

    root = Path(args.root).resolve()
    inputs = [i for i in args.inputs.split(",") if i]
    if not inputs or set(inputs) - {"audio", "text"}:
        raise SystemExit(f"--inputs takes audio and/or text, got {args.inputs!r}")
    p = load_params(root / "params.yaml", overrides(args.set))
    data = root / "data" / "synthesize"
    if not (data / "train.parquet").exists():
        raise SystemExit(f"{data} has no train.parquet: run make pipeline there first (or pass --root)")
    result: dict = {"stage": args.stage, "format": args.format, "set": args.set, "root": str(root),
                    "per_split": args.per_split, "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench-stage-") as tmp:
        if args.score:
            model_dir = latest(Path(args.score))
            result["scored"] = str(model_dir)
        elif args.from_stage:
            st = spec(args.from_stage)
            model_dir = latest(root / "checkpoints" / args.from_stage / (args.format if st.per_format else ""))
            result["scored"] = str(model_dir)
        else:
            st = spec(args.stage)
            up = root / "checkpoints" / st.upstream
            if st.upstream != "init_model" and spec(st.upstream).per_format:
                up = up / args.format
            t0 = time.time()
            sp = p.stage(args.stage)
            run_dir = Path(args.keep) if args.keep else Path(tmp) / "out"
            start = latest(Path(args.init)) if args.init else latest(up)
            result["init"] = str(start)
            start = with_stream_mask(start, p.model.stream_mask, p.model.stream_clock, Path(tmp) / "init")
            res = train(args.stage, p, sp, data, start, run_dir, fmt=args.format,
                        codec_dir=root / "checkpoints" / "codec")
            model_dir = latest(run_dir)
            result.update(train_seconds=round(time.time() - t0, 1), steps=res.steps, batch_size=sp.batch_size,
                          first_loss=res.history[0][1] if res.history else None, final_loss=res.final_loss,
                          val_loss=res.val_loss, probes=res.probes)
        if args.stage == "align" or args.from_stage == "align":
            result.update(transcripts(model_dir, data, args.heard))
            acc, shown = result["accuracy"], result.pop("examples")
        elif (args.stage == "pretrain" or args.from_stage == "pretrain") and p.model.transcribe_first:
            # what the pretrain checkpoint writes first for a spoken question: its transcript (model.transcript)
            result.update(transcripts(model_dir, data, args.heard, max_new=HEARD_TOKENS[p.model.transcript]))
            acc, shown = result["accuracy"], result.pop("examples")
        elif args.stage == "talker" or args.from_stage == "talker":
            result.update(heard(model_dir, root, args.heard, Path(tmp), args.heard_modes))
            acc, shown = result["accuracy"], []
        else:
            items = [it for its in load(p.evaluate.benchmark, limit_per_split=args.per_split,
                                        training=str(data)).values() for it in its]
            acc, shown, every = score(model_dir, args.format, items, inputs, p,
                                      args.max_new or p.evaluate.max_new_tokens)
            result["answers"] = every  # every answer with its reasoning (bench.bench_straddle reads them)
    result.update(accuracy=acc, examples=shown)
    print(f"[bench_stage] {args.stage}@{args.format} {' '.join(args.set) or '(params.yaml)'}"
          + (f", {result['train_seconds']:.0f} s training, val loss {result['val_loss']}" if "train_seconds" in result else ""))
    for k, v in acc.items():
        print(f"  {k:34s} {v:5.1f} %" if args.stage != "talker" else f"  {k:44s} {v:.3f}")
    for kind, a in result.get("by_kind", {}).items():
        print(f"  {kind} ({a['questions']} questions): numbers heard {a['numbers_heard']:.1f} %, "
              f"number recall {a['number_recall']:.1f} %, word recall {a['word_recall']:.1f} %")
    path = Path(args.out) if args.out else RESULTS / f"stage-{args.stage}@{args.format}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
