"""Stage `align`: spoken question -> its transcript. Phase 1a trains the audio adapter alone; phase
1b (the last ``1 - split`` of the steps) adds the embeddings and the thinker LLM so the new special
tokens are learned (freeze table in tasks/core/stages.py). Format-independent.

    python -m tasks.align                    # or: deepspeed --num_gpus N -m tasks.align
"""

from tasks.core.training import training_main

STAGE = "align"
PARAMS = ['align', 'trainer', 'seed', 'model.source', 'model.audio_encoder']  # exactly the params of this stage in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    training_main(STAGE, PARAMS, argv)


if __name__ == "__main__":
    main()
