"""Stage `text_tis`: text problem -> interleaved (response, reasoning) target; trains the thinker's
embeddings and LLM (freeze table in tasks/core/stages.py). ``--format think_first`` trains the
baseline instead.

    python -m tasks.text_tis --format tis    # or: deepspeed --num_gpus N -m tasks.text_tis --format tis
"""

from tasks.core.stage_main import main

STAGE = "text_tis"
DATA = "data/synthesize"
INIT = "checkpoints/pretrain"

if __name__ == "__main__":
    main(STAGE, DATA, INIT)
