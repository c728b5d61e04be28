"""Stage `init_model`: the tokenizer and the starting checkpoint every training stage builds on.

With ``model.source: tiny`` it trains a byte-level BPE on generated problems and builds a random
tiny Qwen2.5-Omni from ``model.tiny``; otherwise it loads the checkpoint (local dir or hub id),
adds our special tokens and resizes the embeddings.

    python -m tasks.init_model            # writes checkpoints/init_model/{model,tokenizer}
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.core.params import ROOT, Params, load_params, to_dict

STAGE = "init_model"
OUT = ROOT / "checkpoints" / STAGE
log = logging.getLogger(STAGE)


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


def run(p: Params, out_dir: Path = OUT) -> InitResult:
    from models.omni import build_tiny, load_pretrained, save

    t0 = time.time()
    tok = build_tokenizer(p)
    if p.model.source == "tiny":
        model = build_tiny(p.model.tiny, tok, seed=p.seed)
    else:
        model = load_pretrained(p.model.source, tok, dtype=p.model.dtype)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        save(model, tmp / "model")
        tok.save_pretrained(str(tmp / "tokenizer"))
        n_params = sum(x.numel() for x in model.parameters())
        meta = {"stage": STAGE, "source": p.model.source, "vocab_size": len(tok), "n_params": n_params, "step": 0}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        from tasks.core.dataset import replace_dir

        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return InitResult(out_dir, len(tok), n_params, time.time() - t0)


def main() -> None:
    from tasks.core.tracking import stage_run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = load_params()
    with stage_run(STAGE, p.mlflow.experiment, {"model": to_dict(p.model), "seed": p.seed}) as tr:
        res = run(p)
        tr.metrics({"init/vocab_size": res.vocab_size, "init/n_params": res.n_params, "init/seconds": res.seconds})
    log.info("wrote %s: vocab %d, %.2fM parameters, %.1fs", res.out_dir, res.vocab_size, res.n_params / 1e6, res.seconds)


if __name__ == "__main__":
    main()
