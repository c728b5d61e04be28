"""Stage `text_tis`: text problem -> interleaved (response, reasoning) target; trains the thinker's
embeddings and LLM (freeze table in tasks/core/stages.py). ``--format think_first`` trains the
baseline instead.

    python -m tasks.text_tis --format tis    # or: deepspeed --num_gpus N -m tasks.text_tis --format tis
"""

from tasks.core.training import training_main

STAGE = "text_tis"
PARAMS = ['text_tis', 'trainer', 'schedule', 'seed', 'model.transcribe_first', 'model.transcript']  # exactly the params of this stage in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    training_main(STAGE, PARAMS, argv)


if __name__ == "__main__":
    main()
