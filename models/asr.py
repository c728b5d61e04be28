"""Offline ASR check of synthesized speech with pocketsphinx (its English model ships in the wheel).

Pocketsphinx with its generic language model hears espeak speech badly (WER ~0.8), so the check
decodes against a word-loop grammar over the expected texts' vocabulary (``vocabulary``): on espeak
speech of generator questions that recovers ~0.55 of a question's words (~0.17 of another
question's, 0 for silence or noise) at real-time factor ~0.06. Good enough to catch broken, silent
or truncated audio; not a grade of quality.

    python -m models.asr "text that was spoken, numbers in words" file.wav
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

_WORD = re.compile(r"[a-z']+")


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


if __name__ == "__main__":
    import sys

    import soundfile as sf

    text, path = sys.argv[1], sys.argv[2]
    wav, sr = sf.read(path, dtype="float32")
    checker = SphinxChecker(words(text))
    r, hyp = checker.recall(wav, text, sr)
    print(f"recall {r:.2f}: {hyp}")
