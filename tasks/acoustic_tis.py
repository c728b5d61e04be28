"""Stage `acoustic_tis`: spoken problem -> interleaved (response, reasoning) target in ``--format``;
trains the audio adapter and the thinker LLM (embeddings frozen).

    python -m tasks.acoustic_tis --format tis        # or --format think_first (the baseline)
"""

from tasks.core.stage_main import main

STAGE = "acoustic_tis"
DATA = "data/synthesize"
INIT = "checkpoints/text_tis/{format}"

if __name__ == "__main__":
    main(STAGE, DATA, INIT)
