"""When each response token is said in its TTS speech: the talker's training alignment.

The talker (models/talker.py, the duration pace) reads each spoken response token for as many codec
frames as the token takes to say. Spreading a clip's frames over its tokens by *estimated* seconds
(letters, digits, pauses) puts a word's start 0.17 s (8 frames) from where espeak says it on average,
0.34 s at the 90th percentile (40 built-in responses): the talker is told it is saying one word while
the audio says its neighbour. espeak reports when each word starts (``EspeakTTS.synthesize_timed``);
this module turns those word starts into a start time per response token:

1. the response's whitespace-separated words are each made speakable on their own
   (``tasks.synth.verbalize.speakable``) and must give back the spoken response word for word (else
   ``None``: the caller falls back to the estimate);
2. each spoken word starts where espeak's word event inside it says (a word espeak merged into its
   neighbour is placed between its neighbours by estimated seconds);
3. a response word runs from its first spoken word's start to the next response word's start, and its
   tokens share that span in proportion to their estimated seconds.

    starts = token_starts(texts, response, spoken, words, seconds, estimate)   # seconds per token, or None
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence

_WORD = re.compile(r"\S+")


def _norm(w: str) -> str:
    return re.sub(r"[^a-z0-9']", "", w.lower())


def spoken_pieces(response: str, spoken: str) -> list[tuple[int, int]] | None:
    """For each whitespace word of ``response``, the range ``[i, j)`` of words of ``spoken`` that say it;
    ``None`` when saying the words one at a time does not give ``spoken`` back (context-dependent
    verbalisation)."""
    from tasks.synth.verbalize import speakable

    target = [_norm(w) for w in spoken.split()]
    out, k = [], 0
    for w in response.split():
        said = [_norm(x) for x in speakable(w).split()] if any(c.isalnum() for c in w) else []
        said = [x for x in said if x]
        if target[k:k + len(said)] != said:
            return None
        out.append((k, k + len(said)))
        k += len(said)
    return out if k == len([t for t in target if t]) and k == len(target) else None


def word_starts(spoken: str, events: Sequence[tuple[int, float]], weight: Callable[[str], float],
                total: float) -> list[float]:
    """Start second of each whitespace word of ``spoken``: the first espeak word event inside it (an event
    that falls on the space before a word belongs to that word); words with none are placed between
    their neighbours in proportion to ``weight`` (estimated seconds). Non-decreasing, within ``[0, total]``."""
    spans = [m.span() for m in _WORD.finditer(spoken)]
    starts: list[float | None] = [None] * len(spans)
    j = 0
    for c, t in sorted(events):
        while j < len(spans) and spans[j][1] <= c:
            j += 1
        if j < len(spans) and starts[j] is None:
            starts[j] = min(max(float(t), 0.0), total)
    if starts and starts[0] is None:
        starts[0] = 0.0
    words = [spoken[a:b] for a, b in spans]
    i = 0
    while i < len(starts):  # a run of unknown starts i..b-1 shares [start of word i-1, start of word b)
        if starts[i] is not None:
            i += 1
            continue
        a, b = i - 1, i
        while b < len(starts) and starts[b] is None:
            b += 1
        end = starts[b] if b < len(starts) else total
        w = [max(weight(x), 1e-3) for x in words[a:b]]  # words a .. b-1
        acc = 0.0
        for k in range(i, b):
            acc += w[k - 1 - a]
            starts[k] = starts[a] + (end - starts[a]) * acc / sum(w)
        i = b
    return list(itertools.accumulate((float(x) for x in starts), max))  # non-decreasing, whatever espeak's clock does


def token_starts(token_texts: Sequence[str], response: str, spoken: str, events: Sequence[tuple[int, float]],
                 total: float, weight: Callable[[str], float]) -> list[float] | None:
    """Start second of each response token (``token_texts``: the decoded tokens, whose concatenation is
    ``response``) in speech of ``spoken`` lasting ``total`` seconds whose words start at ``events``
    (``(character offset in spoken, seconds)``, from ``EspeakTTS.synthesize_timed``); ``weight(text)``
    estimates a text's seconds (``models.talker``'s). ``None`` when the alignment cannot be made."""
    if "".join(token_texts) != response or not events or total <= 0:
        return None
    pieces = spoken_pieces(response, spoken)
    if pieces is None:
        return None
    said = word_starts(spoken, events, weight, total)
    spans = [m.span() for m in _WORD.finditer(response)]
    if not spans:
        return None
    # Response word i runs from its first spoken word's start to the next said response word's start.
    begin = [said[i] if i < j else None for i, j in pieces]
    end: list[float] = [total] * len(spans)
    nxt = total
    for w in range(len(spans) - 1, -1, -1):
        end[w] = nxt
        if begin[w] is not None:
            nxt = begin[w]
        else:
            begin[w] = nxt  # a word that says nothing (a lone symbol): no time of its own
    # A token belongs to the word its first non-space character falls in (a leading space rides with the
    # word it precedes); owners never decrease along the tokens.
    owner, c, w = [], 0, 0
    for text in token_texts:
        core = len(text) - len(text.lstrip())
        pos = c + core if core < len(text) else c
        while w < len(spans) - 1 and spans[w][1] <= pos:
            w += 1
        owner.append(w)
        c += len(text)
    # The tokens of a word share its span in proportion to their estimated seconds.
    out: list[float] = []
    for w, toks in itertools.groupby(range(len(token_texts)), key=owner.__getitem__):
        weights = [weight(token_texts[k]) for k in toks]
        total_w, acc = sum(weights), 0.0
        for wt in weights:
            out.append(begin[w] + (end[w] - begin[w]) * (acc / total_w if total_w > 0 else 0.0))
            acc += wt
    return list(itertools.accumulate(out, max))  # non-decreasing
