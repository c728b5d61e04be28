"""The streaming speech service's BentoML entry point: a spoken or typed question in, Server-Sent Events
out (spoken text, audio chunks, and the silent reasoning when asked), a page at ``/`` that plays and
shows them. The parts live in ``serve/`` (requests, scheduler, runtime, routes, errors); this file only
declares the BentoML service, resolves which model to load and hands it to the routes.

    bentoml serve omni-tis:latest                       # the Bento `python -m tasks.package` built
    OMNI_TIS_MODEL_DIR=DIR bentoml serve service:OmniTiS  # from source: DIR laid out by tasks.package.assemble
    curl -N http://127.0.0.1:3000/v1/stream -H 'Content-Type: application/json' \\
         -d '{"text": "What is 3 plus 4?", "options": {"show_reasoning": true}}'
    curl -N http://127.0.0.1:3000/v1/stream -F audio=@question.wav -F 'options={"seed": 1}'

Routes: serve/routes.py. Request bodies and options: serve/requests.py. Limits come from ``serve:`` in
params.yaml (``OMNI_TIS_PARAMS`` names another file); when the env var named by ``serve.token_env`` is
set, the API wants ``Authorization: Bearer <token>``.

Concurrency (serve/scheduler.py): one thread owns the model and steps every admitted session together,
one thinker position each per round in one batched forward (models/runner.py): ``serve.max_active`` at
once, the rest wait in line (``serve.max_queue`` of them, then 503 with a Retry-After from the measured
queue). A client that goes away has its session closed (its slots freed) before the next round.
"""

from __future__ import annotations

import logging
import os
import time

import bentoml

from serve.config import MODEL_DIR_ENV, MODEL_ENV, PARAMS, SERVE
from serve.routes import app
from serve.runtime import Runtime

log = logging.getLogger("bentoml.omni_tis")  # under "bentoml": its server logs it

# `python -m tasks.package` builds with `--arg model=<name>:<version>`, so a Bento serves exactly the
# model it was built with (BentoML keeps build arguments in the Bento).
MODEL_TAG = (getattr(bentoml.use_arguments(), "model", None) or os.environ.get(MODEL_ENV)
             or f"{PARAMS.package.model_name}:latest")


@bentoml.service(
    name="omni_tis",
    workers=1,  # one model copy; its thread interleaves the sessions
    resources={"gpu": 1} if SERVE.gpus else {},
    traffic={"timeout": SERVE.timeout_s},
    http={"host": SERVE.host, "port": SERVE.port},
)
@bentoml.asgi_app(app, path="/")
class OmniTiS:
    """Loads the packaged model once, warms it up, and hands it to the routes (``app.state.runtime``)."""

    if not os.environ.get(MODEL_DIR_ENV):  # BentoML resolves class-scope models at build and at serve
        bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        model_dir = os.environ.get(MODEL_DIR_ENV)
        tag = f"dir:{model_dir}"
        if not model_dir:
            stored = self.bento_model
            model_dir, tag = stored.path, str(stored.tag)
        t = time.perf_counter()
        self.runtime = Runtime(model_dir, tag)
        app.state.runtime = self.runtime
        log.info("omni-tis: %s on %s, ready in %.1fs (max_active %d, max_queue %d)", tag, self.runtime.engine.device,
                 time.perf_counter() - t, SERVE.max_active, SERVE.max_queue)

    def __is_ready__(self) -> bool:
        return self.runtime is not None and self.runtime.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
