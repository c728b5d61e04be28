"""Offline ASR check of synthesized speech with pocketsphinx (its English model ships in the wheel).

Pocketsphinx with its generic language model hears espeak speech badly (WER ~0.8), so the check
decodes against a word-loop grammar over the expected texts' vocabulary (``vocabulary``): on espeak
speech of generator questions that recovers ~0.55 of a question's words (~0.17 of another
question's, 0 for silence or noise) at real-time factor ~0.06. Good enough to catch broken, silent
or truncated audio; not a grade of quality.

    python -m models.asr "text that was spoken, numbers in words" file.wav
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"[a-z']+")
NOISE_FLOOR = 1e-3  # RMS of the noise floor SphinxASR adds before decoding (-60 dBFS)


def words(text: str) -> list[str]:
    """Lower-case words of already-spoken ``text`` (hyphens split).

    Digits have no single spoken form ("1/2", "$1.50"), so the caller speaks them first (the
    synthesize stage passes ``tasks.synth.verbalize.speakable`` output)."""
    if any(c.isdigit() for c in text):
        raise ValueError(f"ASR words need spoken text, got digits in {text[:60]!r}; "
                         "pass the text as the TTS spoke it (numbers in words)")
    return _WORD.findall(text.lower().replace("-", " "))


class SphinxChecker:
    """Decode 16 kHz speech against a word loop over a vocabulary; measure recall of expected words."""

    def __init__(self, vocabulary: Iterable[str] = (), sample_rate: int = 16000):
        try:
            from pocketsphinx import Decoder
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise RuntimeError("the ASR check needs `pip install pocketsphinx` (its model ships in the wheel)") from e
        self.sample_rate = sample_rate
        # fwdflat/bestpath passes add little for a word-loop grammar and triple the time.
        self.decoder = Decoder(samprate=sample_rate, loglevel="FATAL", fwdflat=False, bestpath=False)
        self.vocab: frozenset[str] = frozenset()
        self._n_grammars = 0
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary: Iterable[str]) -> None:
        known = {w for w in vocabulary if self.decoder.lookup_word(w)}
        if not known:
            known = {"the", "a", "is", "what", "how", "many"}
        if known == self.vocab:
            return
        self.vocab = frozenset(known)
        self._n_grammars += 1
        name = f"loop{self._n_grammars}"
        grammar = "#JSGF V1.0;\ngrammar loop;\npublic <s> = ( " + " | ".join(sorted(known)) + " )* ;\n"
        self.decoder.add_jsgf_string(name, grammar)
        self.decoder.activate_search(name)

    def transcribe(self, wav: np.ndarray, sample_rate: int = 16000) -> str:
        if sample_rate != self.sample_rate:
            raise ValueError(f"ASR expects {self.sample_rate} Hz audio, got {sample_rate} Hz; resample first")
        pcm = (np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767).astype(np.int16)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""

    def recall(self, wav: np.ndarray, text: str, sample_rate: int = 16000) -> tuple[float, str]:
        """Share of the distinct (dictionary) words of ``text`` heard in ``wav``, and the transcript."""
        ref = {w for w in words(text) if w in self.vocab}
        if not ref:
            return 1.0, ""
        hyp = self.transcribe(wav, sample_rate)
        return len(ref & set(words(hyp))) / len(ref), hyp


def word_recall(reference: str, hypothesis: str) -> float:
    """Share of the reference's words (counted with repeats) that the hypothesis holds: the bag-of-words
    intersection over the reference's length (1.0 for an empty reference)."""
    ref, hyp = Counter(words(reference)), Counter(_WORD.findall(hypothesis.lower().replace("-", " ")))
    n = sum(ref.values())
    return sum((ref & hyp).values()) / n if n else 1.0


def write_bigram_lm(sentences: Iterable[Sequence[str]], path: str | Path, discount: float = 0.5) -> int:
    """A bigram ARPA language model (absolute discounting, backing off to add-1/2 unigrams) of word
    lists; returns its vocabulary size. Pocketsphinx decodes with it: on espeak speech of generated
    responses it hears ~0.70 of the words against ~0.33 with its generic English LM (and 6x faster),
    ~0.24 of another response's words (their template words) and 0 of noise (without the noise floor
    of ``SphinxASR``, which takes the 0.70 to ~0.99)."""
    uni: Counter = Counter()
    bi: Counter = Counter()
    for s in sentences:
        s = ["<s>", *s, "</s>"]
        uni.update(s[1:])
        bi.update(zip(s[:-1], s[1:]))
    if not bi:
        raise ValueError("the language model needs at least one sentence with words")
    vocab = sorted(set(uni) | {"<s>"})
    total = sum(uni.values())
    p_uni = {w: (uni[w] + 0.5) / (total + 0.5 * len(vocab)) for w in vocab}
    ctx: Counter = Counter()
    follow: dict[str, list[str]] = {}
    for (v, w), c in bi.items():
        ctx[v] += c
        follow.setdefault(v, []).append(w)
    p_bi = {(v, w): (c - discount) / ctx[v] + discount * len(follow[v]) / ctx[v] * p_uni[w] for (v, w), c in bi.items()}
    backoff = {}
    for v, ws in follow.items():  # the mass left for unseen followers, spread over their unigram shares
        left = 1.0 - sum(p_bi[(v, w)] for w in ws)
        backoff[v] = max(left, 1e-9) / max(1.0 - sum(p_uni[w] for w in ws), 1e-9)
    lines = ["\\data\\", f"ngram 1={len(vocab)}", f"ngram 2={len(p_bi)}", "", "\\1-grams:"]
    for w in vocab:
        lp = -99.0 if w == "<s>" else math.log10(p_uni[w])
        lines.append(f"{lp:.5f} {w} {math.log10(backoff.get(w, 1.0)):.5f}")
    lines += ["", "\\2-grams:"]
    lines += [f"{math.log10(p):.5f} {v} {w}" for (v, w), p in sorted(p_bi.items())]
    lines += ["", "\\end\\", ""]
    Path(path).write_text("\n".join(lines))
    return len(vocab)


class SphinxASR:
    """Pocketsphinx transcription against a bigram LM of in-domain text (``write_bigram_lm``): the
    recognizer of the evaluation's intelligibility chain. Words the dictionary lacks are dropped from
    the LM (they can never be heard).

        asr = SphinxASR.from_texts(training_responses_in_words, "lm.arpa")
        asr.transcribe(wave_16k)            # "the answer is thirty one"
    """

    def __init__(self, lm_path: str | Path, sample_rate: int = 16000) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise RuntimeError("the ASR needs `pip install pocketsphinx` (its model ships in the wheel)") from e
        if not Path(lm_path).is_file():
            raise FileNotFoundError(f"no language model at {lm_path}; build one with SphinxASR.from_texts(...)")
        self.sample_rate = sample_rate
        self.decoder = Decoder(samprate=sample_rate, loglevel="FATAL", lm=str(lm_path))

    @classmethod
    def from_texts(cls, texts: Iterable[str], lm_path: str | Path, sample_rate: int = 16000) -> "SphinxASR":
        """Build the LM from spoken ``texts`` (numbers in words) at ``lm_path``, then load it."""
        from pocketsphinx import Decoder

        probe = Decoder(samprate=sample_rate, loglevel="FATAL", lm=None)
        known: dict[str, bool] = {}

        def keep(w: str) -> bool:
            if w not in known:
                known[w] = bool(probe.lookup_word(w))
            return known[w]

        write_bigram_lm(([w for w in words(t) if keep(w)] for t in texts), lm_path)
        return cls(lm_path, sample_rate)

    def transcribe(self, wave: np.ndarray, sample_rate: int | None = None) -> str:
        """Lower-case words heard in a mono float wave (resampled to 16 kHz when needed)."""
        from models.wave import resample

        w = resample(np.asarray(wave, np.float32), sample_rate or self.sample_rate, self.sample_rate)
        if len(w) < self.sample_rate // 10:
            return ""  # under 0.1 s: nothing to hear
        # A fixed noise floor at -60 dBFS: pocketsphinx's feature normalisation breaks on digital
        # silence (espeak's pauses are exact zeros), and misses words around it: on espeak speech of
        # generated responses recall goes 0.63 -> 0.99 with it (the same seeded floor every call).
        floor = np.random.default_rng(0).normal(0.0, NOISE_FLOOR, len(w)).astype(np.float32)
        pcm = (np.clip(w + floor, -1.0, 1.0) * 32767).astype(np.int16)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


if __name__ == "__main__":
    import sys

    import soundfile as sf

    text, path = sys.argv[1], sys.argv[2]
    wav, sr = sf.read(path, dtype="float32")
    checker = SphinxChecker(words(text))
    r, hyp = checker.recall(wav, text, sr)
    print(f"recall {r:.2f}: {hyp}")
