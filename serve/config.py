"""The service's settings: params.yaml's ``serve:`` section, loaded once at import (the same strict
loader as every stage: unknown keys and missing ones are errors). ``OMNI_TIS_PARAMS`` names another
params file (tests: small limits).

    from serve.config import SERVE
    SERVE.max_active, SERVE.body_timeout_s
"""

from __future__ import annotations

import os
from pathlib import Path

from tasks.core.params import Params, ServeParams, load_params

ROOT = Path(__file__).resolve().parents[1]  # the repository (or the Bento's src/)
WEB = ROOT / "web"
PARAMS_ENV = "OMNI_TIS_PARAMS"  # another params.yaml (tests: small limits)
MODEL_DIR_ENV = "OMNI_TIS_MODEL_DIR"  # serve a packaged model directory instead of the model store's
MODEL_ENV = "OMNI_TIS_MODEL"  # the model store tag when no build argument pins it

PARAMS: Params = load_params(os.environ.get(PARAMS_ENV) or ROOT / "params.yaml")
SERVE: ServeParams = PARAMS.serve
