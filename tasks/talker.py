"""Stage `talker`: spoken problem -> interleaved thinker stream (frozen) -> the talker predicts the
response speech's codec ids (checkpoints/codec, from `python -m tasks.codec`). Only the talker
trains; it sees response positions only (models/talker.py).

    python -m tasks.talker --format tis              # or --format think_first
"""

from tasks.core.training import training_main

STAGE = "talker"
PARAMS = ['talker', 'trainer', 'schedule', 'seed', 'model.transcribe_first', 'model.transcript']  # exactly the params of this stage in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    training_main(STAGE, PARAMS, argv)


if __name__ == "__main__":
    main()
