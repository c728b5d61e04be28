"""Anticipation drift: the response must not say a number before the reasoning has derived it.

Rule (DESIGN.md): every number spoken in block k already appears in the question or in the
reasoning of blocks < k. ``min_blocks`` turns that rule into per-token constraints for
``models.format.interleave`` (which then delays response tokens with speak-slot pads), and
``check_drift`` verifies a laid-out sequence against the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from models.format import ControlIds, Layout, Role, Schedule

NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def normalize_number(s: str) -> str:
    """'1,200' -> '1200', '12.50' -> '12.5', '3.0' -> '3' (Spoken-MQA's comparison form)."""
    s = s.replace(",", "").rstrip(".")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s


def numbers(text: str) -> list[tuple[str, int, int]]:
    """(normalized number, start, end) for each number written with digits in ``text``."""
    return [(normalize_number(m.group()), m.start(), m.end()) for m in NUMBER.finditer(text)]


class DriftError(ValueError):
    """The response states a number that neither the question nor the reasoning contains."""


def _offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


@dataclass
class Tokenized:
    """Token ids of a sample's three texts plus the earliest block of each response token."""

    question_ids: list[int]
    response_ids: list[int]
    reasoning_ids: list[int]
    min_block: list[int]


def tokenize_sample(
    tokenizer, question: str, response: str, reasoning: str, schedule: Schedule
) -> Tokenized:
    """Tokenize and compute drift constraints; raises DriftError for a number never derived."""
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    r_ids, r_off = _offsets(tokenizer, reasoning)
    s_ids, s_off = _offsets(tokenizer, response)
    given = {n for n, _, _ in numbers(question)}
    # A number is available from the block after the one holding the reasoning token that ends it.
    available: dict[str, int] = {}
    for n, _, end in numbers(reasoning):
        j = next(i for i, (a, b) in enumerate(r_off) if b >= end)
        available.setdefault(n, j // schedule.think + 1)
    min_block = [0] * len(s_ids)
    for n, start, end in numbers(response):
        if n in given:
            continue
        if n not in available:
            raise DriftError(
                f"response says {n!r}, which appears in neither the question nor the reasoning; "
                "the sample cannot be spoken without anticipation drift"
            )
        for i, (a, b) in enumerate(s_off):
            if a < end and b > start:
                min_block[i] = max(min_block[i], available[n])
    # A token may not be spoken before an earlier one: keep constraints non-decreasing.
    for i in range(1, len(min_block)):
        min_block[i] = max(min_block[i], min_block[i - 1])
    return Tokenized(q_ids, s_ids, r_ids, min_block)


@dataclass
class Violation:
    number: str
    block: int
    available_from: int | None  # None: never derived


def check_drift(layout: Layout, tokenizer, question: str, ids: ControlIds, schedule: Schedule) -> list[Violation]:
    """Decode a laid-out TiS sequence block by block and list numbers spoken too early."""
    body = layout.input_ids[layout.prompt_len :]
    roles = layout.roles[layout.prompt_len :]
    resp_toks: list[tuple[int, int]] = []  # (token, block)
    reas_toks: list[tuple[int, int]] = []
    for i, (tok, role) in enumerate(zip(body, roles)):
        block = i // schedule.block_len
        if tok in (ids.pad, ids.eos) or role is Role.CONTROL:
            continue
        (resp_toks if role is Role.RESPONSE else reas_toks).append((tok, block))

    def text_with_blocks(toks: list[tuple[int, int]]) -> tuple[str, list[int]]:
        text, char_block = "", []
        for tok, block in toks:
            piece = tokenizer.decode([tok])
            text += piece
            char_block += [block] * len(piece)
        return text, char_block

    r_text, r_blocks = text_with_blocks(reas_toks)
    s_text, s_blocks = text_with_blocks(resp_toks)
    given = {n for n, _, _ in numbers(question)}
    available: dict[str, int] = {}
    for n, _, end in numbers(r_text):
        available.setdefault(n, r_blocks[end - 1] + 1)
    out = []
    for n, start, _ in numbers(s_text):
        if n in given:
            continue
        spoken = s_blocks[start]
        if n not in available or available[n] > spoken:
            out.append(Violation(n, spoken, available.get(n)))
    return out


def answer_of(response: str) -> str | None:
    """The number after the last "The answer is" (else the last number), normalized."""
    cut = response.rsplit("The answer is", 1)
    tail = cut[1] if len(cut) == 2 else response
    found = numbers(tail)
    if not found:
        return None
    return found[0][0] if len(cut) == 2 else found[-1][0]

