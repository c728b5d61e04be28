"""Stage `text_tis`: text problem -> interleaved (response, reasoning) target; trains the thinker's
embeddings and LLM (freeze table in tasks/core/stages.py). ``text_tis.format: think_first`` trains
the baseline instead.

    python -m tasks.text_tis                 # or: deepspeed --num_gpus N -m tasks.text_tis
"""

from tasks.core.stage_main import main

STAGE = "text_tis"
DATA = "data/generate"
INIT = "checkpoints/init_model"

if __name__ == "__main__":
    main(STAGE, DATA, INIT)
