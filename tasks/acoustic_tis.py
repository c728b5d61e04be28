"""Stage `acoustic_tis`: spoken problem -> interleaved (response, reasoning) target in ``--format``;
trains the audio adapter and the thinker LLM (embeddings frozen).

    python -m tasks.acoustic_tis --format tis        # or --format think_first (the baseline)
"""

from tasks.core.training import training_main

STAGE = "acoustic_tis"
PARAMS = ['acoustic_tis', 'trainer', 'schedule', 'seed', 'model.source', 'model.audio_encoder', 'model.keep_ear', 'model.transcribe_first', 'model.transcript']  # exactly the params of this stage in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    training_main(STAGE, PARAMS, argv)


if __name__ == "__main__":
    main()
