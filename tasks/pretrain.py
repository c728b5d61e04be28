"""Stage `pretrain`: math problem (a seeded ``pretrain.text_fraction`` as text, the rest as audio) ->
text solution (reasoning, then response); trains adapter, embeddings and thinker LLM.
Format-independent.

    python -m tasks.pretrain                 # or: deepspeed --num_gpus N -m tasks.pretrain
"""

from tasks.core.stage_main import main

STAGE = "pretrain"
DATA = "data/synthesize"
INIT = "checkpoints/align"

if __name__ == "__main__":
    main(STAGE, DATA, INIT)
