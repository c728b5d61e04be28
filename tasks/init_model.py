"""Stage `init_model`: the tokenizer and the starting checkpoint every training stage builds on.

With ``model.source: tiny`` it trains a byte-level BPE on generated problems and builds a random
tiny Qwen2.5-Omni from ``model.tiny``; otherwise it loads the checkpoint (local dir or hub id),
adds our special tokens and resizes the embeddings.

    python -m tasks.init_model            # writes checkpoints/init_model/{model,tokenizer}
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tasks.core.params import ROOT, Params
from tasks.core.stage import StageResult, stage_main

STAGE = "init_model"
PARAMS = ["seed", "model"]
OUT = ROOT / "checkpoints" / STAGE


@dataclass
class InitResult:
    out_dir: Path
    vocab_size: int
    n_params: int
    seconds: float


def build_tokenizer(p: Params):
    from models.tokenizer import add_tis_tokens, train_bpe
    from tasks.synth.builtin import generate_problems

    if p.model.source == "tiny":
        # A corpus seed far from the data seeds, so the tokenizer never sees the training problems.
        probs = generate_problems(p.model.tokenizer_corpus, seed=10_000 + p.seed)
        texts = (t for q in probs for t in (q.question, q.reasoning, q.response))
        return train_bpe(texts, p.model.tokenizer_vocab_size)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(p.model.source)
    add_tis_tokens(tok)
    return tok


def streams(model, tok, p: Params) -> None:
    """What the thinker's config keeps about its two streams (models/streams.py): the markers (each position
    also reads its stream's control-token row) and the mask (the reasoning never reads the response)."""
    from models.streams import enable, enable_mask
    from models.tokenizer import control_ids

    ids = control_ids(tok)
    if p.model.stream_markers:
        enable(model, ids.speak, ids.think)
    if p.model.stream_mask:
        enable_mask(model, ids.speak, ids.think, clock=p.model.stream_clock)


def run(p: Params, out_dir: Path = OUT) -> InitResult:
    from models.atomic import atomic_dir, write_json
    from models.omni import build_tiny, load_pretrained, save

    t0 = time.time()
    tok = build_tokenizer(p)
    if p.model.source == "tiny":
        model = build_tiny(p.model.tiny, tok, seed=p.seed)
    else:
        model = load_pretrained(p.model.source, tok, dtype=p.model.dtype)
    streams(model, tok, p)
    n_params = sum(x.numel() for x in model.parameters())
    with atomic_dir(out_dir) as tmp:
        save(model, tmp / "model")
        tok.save_pretrained(str(tmp / "tokenizer"))
        write_json(tmp / "meta.json", {"stage": STAGE, "source": p.model.source, "vocab_size": len(tok),
                                       "n_params": n_params, "step": 0, "stream_markers": p.model.stream_markers,
                                       "stream_mask": p.model.stream_mask,
                                       "stream_clock": p.model.stream_clock})
    return InitResult(out_dir, len(tok), n_params, time.time() - t0)


def work(p: Params, fmt: str | None = None, tracker=None) -> StageResult:
    res = run(p)
    return StageResult({"init/vocab_size": res.vocab_size, "init/n_params": res.n_params,
                        "init/seconds": round(res.seconds, 2)},
                       f"wrote {res.out_dir}: vocab {res.vocab_size}, {res.n_params / 1e6:.2f}M parameters, "
                       f"{res.seconds:.1f}s")


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, PARAMS, work, argv)


if __name__ == "__main__":
    main()
