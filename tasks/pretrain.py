"""Stage `pretrain`: math problem (a seeded ``pretrain.text_fraction`` as text, the rest as audio) ->
text solution (reasoning, then response); trains adapter, embeddings and thinker LLM.
Format-independent.

    python -m tasks.pretrain                 # or: deepspeed --num_gpus N -m tasks.pretrain
"""

from tasks.core.training import training_main

STAGE = "pretrain"
PARAMS = ['pretrain', 'trainer', 'seed', 'model.source', 'model.audio_encoder', 'model.keep_ear', 'model.transcribe_first', 'model.transcript']  # exactly the params of this stage in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    training_main(STAGE, PARAMS, argv)


if __name__ == "__main__":
    main()
