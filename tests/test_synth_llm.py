"""The optional LLM rewriter/judge against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest

from tasks.synth.config import LLMParams, SynthConfigError
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
    client = LLMClient.from_params(LLMParams(endpoint=server, model="m", api_key_env="FAKE_KEY", rewrite=True))
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
    from tasks.synth.config import SourceSpec, SynthesizeParams
    from tasks.synth.pipeline import Rules, process_batch
    from tasks.synth.sources import collect
    from test_synth_datasets import small_tokenizer

    cfg = SynthesizeParams(sources=(SourceSpec("builtin", limit=2),), llm=LLMParams(endpoint=server, model="m", judge=True))
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
        LLMParams(judge=True)
