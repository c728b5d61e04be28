"""Optional LLM rewriter and judge behind any OpenAI-compatible endpoint (``/chat/completions``).

Off by default (``synthesize.llm.endpoint`` empty). Uses only the standard library. A rewrite is
kept only if it still ends "The answer is N." with the right N and states no number the original
response or reasoning lacks; otherwise the rule-based response stays (counted as a fallback).
With ``rewrite`` on, an answer-only record gets a generated worked solution (``solve``), which then
goes through the same decomposition and verification as a dataset's own solution.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from tasks.core.params import LLMParams

REWRITE_PROMPT = (
    "Rewrite the spoken answer to this math problem as one to three short, natural sentences a person "
    "would say aloud. Write numbers with digits, use no symbols, add no new numbers, and end with exactly "
    "'The answer is {answer}.'\n\nProblem: {question}\nWorked solution: {reasoning}\nSpoken answer: {response}\n\n"
    "Reply with the rewritten spoken answer only."
)
SOLVE_PROMPT = (
    "Solve this math word problem step by step in a few short sentences, writing each calculation with "
    "digits (for example 3 * 4 = 12). The correct final answer is {answer}. End with exactly "
    "'The answer is {answer}.'\n\nProblem: {question}\n\nReply with the solution only."
)
JUDGE_PROMPT = (
    "Does the spoken version say the same math problem as the original, with every number and quantity "
    "kept? Reply YES or NO.\n\nOriginal: {question}\nSpoken: {spoken}"
)


class LLMError(RuntimeError):
    pass


@dataclass
class LLMClient:
    endpoint: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    temperature: float = 0.0

    @classmethod
    def from_params(cls, p: LLMParams) -> "LLMClient":
        return cls(p.endpoint.rstrip("/"), p.model, os.environ.get(p.api_key_env) or None, p.timeout_s, p.temperature)

    def chat(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "temperature": self.temperature,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.endpoint}/chat/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                data = json.loads(r.read())
            return str(data["choices"][0]["message"]["content"]).strip()
        except (urllib.error.URLError, TimeoutError, KeyError, IndexError, ValueError) as e:
            raise LLMError(f"LLM endpoint {self.endpoint} failed ({type(e).__name__}: {e}); "
                           "check synthesize.llm.endpoint/model or turn the LLM off") from e

    def rewrite_response(self, s, stats: dict) -> str:
        """A rewritten response, or the original when the rewrite fails any check."""
        from models.drift import answer_of, numbers
        from tasks.synth.verbalize import clean_response

        stats["llm_calls"] = stats.get("llm_calls", 0) + 1
        try:
            new = clean_response(self.chat(REWRITE_PROMPT.format(
                answer=s.answer, question=s.question, reasoning=s.reasoning, response=s.response)))
        except LLMError:
            stats["llm_errors"] = stats.get("llm_errors", 0) + 1
            return s.response
        allowed = {n for t in (s.question, s.reasoning, s.response) for n, _, _ in numbers(t)}
        ok = (new.endswith(f"The answer is {s.answer}.") and answer_of(new) == s.answer
              and all(n in allowed for n, _, _ in numbers(new)))
        if not ok:
            stats["llm_fallback"] = stats.get("llm_fallback", 0) + 1
            return s.response
        return new

    def solve(self, question: str, answer: str, stats: dict) -> str | None:
        """A worked solution for an answer-only record (None when the endpoint fails)."""
        stats["llm_calls"] = stats.get("llm_calls", 0) + 1
        try:
            return self.chat(SOLVE_PROMPT.format(question=question, answer=answer))
        except LLMError:
            stats["llm_errors"] = stats.get("llm_errors", 0) + 1
            return None

    def judge(self, question: str, spoken: str, stats: dict) -> bool:
        stats["llm_calls"] = stats.get("llm_calls", 0) + 1
        try:
            reply = self.chat(JUDGE_PROMPT.format(question=question, spoken=spoken))
        except LLMError:
            stats["llm_errors"] = stats.get("llm_errors", 0) + 1
            return False  # an unjudged sample is not kept when judging was asked for
        return reply.strip().upper().startswith("YES")
