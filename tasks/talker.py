"""Stage `talker`: spoken problem -> interleaved thinker stream (frozen) -> the talker predicts the
response speech's codec ids (checkpoints/codec, from `python -m tasks.codec`). Only the talker
trains; it sees response positions only (models/talker.py).

    python -m tasks.talker --format tis              # or --format think_first
"""

from tasks.core.stage_main import main

STAGE = "talker"
DATA = "data/synthesize"
INIT = "checkpoints/acoustic_tis/{format}"

if __name__ == "__main__":
    main(STAGE, DATA, INIT)
