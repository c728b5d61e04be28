"""The streaming speech service as a package; ``service.py`` at the repository root is the BentoML entry
point (``bentoml serve service:OmniTiS``) and only loads the model into these parts:

    config.py     params.yaml's ``serve:`` (``OMNI_TIS_PARAMS`` names another file), env var names
    requests.py   a request body (JSON or multipart) -> a validated ``Question``; audio decoding; limits
    scheduler.py  the model thread: admission, the order sessions step in, cancels, wait estimates
    runtime.py    the loaded engine, its manifest (models.manifest, shared with tasks/package.py), scheduler
    routes.py     the FastAPI app: the page, /v1/stream (SSE), /v1/answer, /v1/health, /openapi.json
    errors.py     the error contract: every error JSON, no exception escapes to the server

Layering (tests/test_layers.py): serve/ imports models/ and tasks.core.params (the one params loader),
never a stage module or flows/; nothing in models/, tasks/ or flows/ imports serve/.
"""
