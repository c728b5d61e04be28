"""Stage `align`: spoken question -> its transcript. Phase 1a trains the audio adapter alone; phase
1b (the last ``1 - split`` of the steps) adds the embeddings and the thinker LLM so the new special
tokens are learned (freeze table in tasks/core/stages.py). Format-independent.

    python -m tasks.align                    # or: deepspeed --num_gpus N -m tasks.align
"""

from tasks.core.stage_main import main

STAGE = "align"
DATA = "data/synthesize"
INIT = "checkpoints/init_model"

if __name__ == "__main__":
    main(STAGE, DATA, INIT)
