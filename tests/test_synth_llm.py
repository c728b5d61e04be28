"""The optional LLM rewriter/judge against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest

from conftest import synth_params
from tasks.core.params import SynthConfigError
from tasks.synth.llm import LLMClient
from tasks.synth.solutions import TextSample


class FakeOpenAI(BaseHTTPRequestHandler):
    replies: list[str] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        content = FakeOpenAI.replies.pop(0)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    srv = HTTPServer(("127.0.0.1", 0), FakeOpenAI)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    FakeOpenAI.replies, FakeOpenAI.seen = [], []
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()


SAMPLE = TextSample("g1", "gsm8k", "multi_step", "Tom has 3 apples and buys 4. How many?", "3 + 4 = 7. Answer: 7.",
                    "Tom has 7 apples. The answer is 7.", "7")


def test_rewrite_kept_only_when_it_passes_checks(server, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    client = LLMClient.from_params(synth_params(llm=dict(endpoint=server, model="m", api_key_env="FAKE_KEY", rewrite=True)).llm)
    stats: dict = {}
    FakeOpenAI.replies = ["Three plus 4 makes 7 apples in all. The answer is 7.",
                          "He has 9 apples. The answer is 9.",  # wrong answer
                          "Adding 12 gives 7. The answer is 7."]  # invents a number
    assert client.rewrite_response(SAMPLE, stats) == "Three plus 4 makes 7 apples in all. The answer is 7."
    assert client.rewrite_response(SAMPLE, stats) == SAMPLE.response
    assert client.rewrite_response(SAMPLE, stats) == SAMPLE.response
    assert stats == {"llm_calls": 3, "llm_fallback": 2}
    assert FakeOpenAI.seen[0]["path"] == "/v1/chat/completions"
    assert FakeOpenAI.seen[0]["auth"] == "Bearer sk-test" and FakeOpenAI.seen[0]["model"] == "m"


def test_judge_and_pipeline_rejection(server):
    from tasks.core.params import SourceSpec
    from tasks.synth.pipeline import Rules, process_batch
    from tasks.synth.sources import collect
    from test_synth_datasets import small_tokenizer

    cfg = synth_params(sources=(SourceSpec("builtin", limit=2),), llm=dict(endpoint=server, model="m", judge=True))
    records, _, _ = collect(cfg)
    FakeOpenAI.replies = ["YES", "NO, a number changed"]
    out = process_batch(pd.DataFrame(records), Rules(cfg, small_tokenizer(), with_audio=False))
    assert list(out.reject) == ["", "judge_rejected"]
    assert "Original:" in FakeOpenAI.seen[0]["messages"][0]["content"]


def test_endpoint_down_counts_errors():
    client = LLMClient("http://127.0.0.1:9", "m", timeout_s=2)
    stats: dict = {}
    assert client.rewrite_response(SAMPLE, stats) == SAMPLE.response
    assert client.judge("q", "q", stats) is False
    assert stats["llm_errors"] == 2


def test_llm_settings_validated():
    with pytest.raises(SynthConfigError, match="endpoint"):
        synth_params(llm=dict(judge=True))


def _run(cfg, tok=None):
    from tasks.synth.pipeline import Rules, _WORKER, process_batch
    from tasks.synth.sources import collect
    from test_synth_datasets import small_tokenizer

    _WORKER.pop("llm", None)  # the client is per worker process: rebuild it for this server
    records, _, _ = collect(cfg)
    out = process_batch(pd.DataFrame(records), Rules(cfg, tok or small_tokenizer(), with_audio=False))
    _WORKER.pop("llm", None)
    return records, out


def test_rewrite_path_end_to_end(server):
    """synthesize.llm.rewrite=true through process_batch: rewrites are kept (TextSample is frozen)."""
    from tasks.core.params import SourceSpec
    from tasks.synth.solutions import decompose

    cfg = synth_params(sources=(SourceSpec("builtin", limit=3),),
                           llm=dict(endpoint=server, model="m", rewrite=True))
    from tasks.synth.sources import collect

    samples = [decompose(r["source"], r["id"], json.loads(r["record"])) for r in collect(cfg)[0]]
    FakeOpenAI.replies = [f"Working it through gives {s.answer}. The answer is {s.answer}." for s in samples[:2]]
    FakeOpenAI.replies.append("It is 123456. The answer is 123456.")  # fails the checks: the rule response stays
    _, out = _run(cfg)
    assert list(out.reject) == ["", "", ""], list(zip(out.reject, out.detail))
    assert list(out.response[:2]) == [f"Working it through gives {s.answer}. The answer is {s.answer}."
                                      for s in samples[:2]]
    assert out.response[2] == samples[2].response
    stats = json.loads(out.batch_stats[0])
    assert stats["llm_calls"] == 3 and stats["llm_fallback"] == 1 and stats["llm_errors"] == 0


def test_answer_only_record_gets_a_verified_generated_solution(server, tmp_path):
    from tasks.core.params import SourceSpec

    q = "Tom has 3 bags with 168 marbles in each bag. How many marbles does he have?"
    f = tmp_path / "answers.jsonl"
    f.write_text(json.dumps({"question": q, "answer": "#### 504"}) + "\n" + json.dumps({"question": q, "answer": "504"}) + "\n")
    cfg = synth_params(sources=(SourceSpec("gsm8k", str(f)),), llm=dict(endpoint=server, model="m", rewrite=True))
    FakeOpenAI.replies = [
        "**Step 1:** Each bag holds 168 marbles.\n**Step 2:** 3 * 168 = 504 marbles. The answer is 504.",  # solve
        "He has 504 marbles in his 3 bags. The answer is 504.",  # rewrite of that sample
        "3 * 168 = 404 marbles. The answer is 404.",  # solve, second record: a wrong generated answer
    ]
    _, out = _run(cfg)
    assert list(out.reject) == ["", "generated_wrong_answer"], list(zip(out.reject, out.detail))
    assert "3 * 168 = 504" in out.reasoning[0] and "**" not in out.reasoning[0]
    assert out.response[0] == "He has 504 marbles in his 3 bags. The answer is 504."
    assert "The correct final answer is 504" in FakeOpenAI.seen[0]["messages"][0]["content"]


def test_answer_only_without_rewriter_is_no_solution(tmp_path):
    from tasks.core.params import SourceSpec

    f = tmp_path / "answers.jsonl"
    f.write_text(json.dumps({"question": "How many legs do 3 cats have?", "answer": "#### 12"}) + "\n")
    _, out = _run(synth_params(sources=(SourceSpec("gsm8k", str(f)),)))
    assert list(out.reject) == ["no_solution"]
