"""Tokenizer round trip, special tokens, tiny model build/save/load, and one real training step."""

from __future__ import annotations

import pytest
import torch

from models.format import Role, interleave
from models.tokenizer import ALL_SPECIAL, control_ids, encode, load_tokenizer, text_prompt


def test_tokenizer_round_trip_and_specials(tokenizer, tmp_path):
    text = "Ana buys 4 pens at $3.50 each: 4 * 3.5 = 14. The answer is 14."
    assert tokenizer.decode(encode(tokenizer, text)) == text
    tokenizer.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert encode(again, text) == encode(tokenizer, text)
    for t in ALL_SPECIAL:  # each special token is one id, and survives save/load
        assert len(encode(again, t)) == 1
        assert again.convert_tokens_to_ids(t) == tokenizer.convert_tokens_to_ids(t)
    ids = control_ids(again)
    assert len({ids.speak, ids.think, ids.pad, ids.eos}) == 4


def test_tokenizer_too_small_vocab_is_a_clear_error():
    from models.tokenizer import train_bpe

    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        train_bpe(["hello"], 100)


def test_missing_tokenizer_dir_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_model"):
        load_tokenizer(tmp_path / "nope")


def test_numbers_are_single_digit_tokens(tokenizer):
    """As in Qwen2.5, every digit is its own token, whatever the number (arithmetic is learnable)."""
    for text, digits in [("49288 plus 26383", "4928826383"), ("The answer is 12.50.", "1250"), ("x=700", "700")]:
        toks = tokenizer.convert_ids_to_tokens(encode(tokenizer, text))
        assert [t.lstrip("Ġ") for t in toks if any(c.isdigit() for c in t)] == list(digits), toks
        assert tokenizer.decode(encode(tokenizer, text)) == text


def test_tiny_model_train_steps_lower_loss_on_that_batch(tokenizer, tiny_model):
    import copy

    ids = control_ids(tokenizer)
    prompt = text_prompt(tokenizer, "What is 3 plus 4?")
    lay = interleave(prompt, encode(tokenizer, "3 plus 4 is 7. The answer is 7."),
                     encode(tokenizer, "3 + 4 = 7"), ids)
    x = torch.tensor([lay.input_ids])
    labels = torch.tensor([[t if m else -100 for t, m in zip(lay.input_ids, lay.loss_mask)]])
    model = copy.deepcopy(tiny_model.thinker)  # the session fixture stays untrained for other tests
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = model(input_ids=x, labels=labels).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.9 * losses[0], losses
    assert Role.CONTROL in lay.roles


def test_saved_tiny_checkpoint_loads_through_the_real_checkpoint_path(tokenizer, tiny_model, tmp_path):
    """load_pretrained is what a real Qwen2.5-Omni goes through: test it offline on our own save."""
    from transformers import AutoTokenizer

    from models.omni import load_pretrained, save
    from models.tokenizer import add_tis_tokens

    save(tiny_model, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").exists() and (tmp_path / "ckpt" / "spk_dict.pt").exists()
    # A "foreign" tokenizer without our TiS tokens: the loader path adds them and resizes embeddings.
    tokenizer.save_pretrained(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    n_before = len(tok)
    tok.add_tokens(["<|brand_new|>"], special_tokens=True)
    assert add_tis_tokens(tok) == 0  # already there
    m = load_pretrained(str(tmp_path / "ckpt"), tok)
    emb = m.thinker.get_input_embeddings().weight
    assert emb.shape[0] == n_before + 1
    old = tiny_model.thinker.get_input_embeddings().weight
    assert torch.equal(emb[:n_before], old[:n_before])  # the saved weights came back, not a fresh init
    assert torch.allclose(emb[n_before], old.mean(0), atol=1e-5)  # the new row: mean of the old ones
    prompt = torch.tensor([text_prompt(tok, "What is 1 plus 1?")])
    with torch.no_grad():
        a = m.thinker(input_ids=prompt).logits[0, -1, :n_before]
        b = tiny_model.thinker(input_ids=prompt).logits[0, -1]
    assert torch.allclose(a, b[:n_before], atol=1e-4)  # same function as the model that was saved
    out = m.thinker.generate(input_ids=prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt.shape[1] + 4
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained("./no/such/dir", tok)


def test_loaded_checkpoints_never_reach_for_hub_kernels(tokenizer, tiny_model, tmp_path):
    """transformers 5 turns on hub kernels in from_pretrained by default; on a GPU the first train()/eval()
    then downloads kernels from the hub (offline: a crash). Both loaders keep them off, so no layer is
    swapped and nothing is fetched, on any device."""
    from models.omni import load_checkpoint, load_pretrained, save

    save(tiny_model, tmp_path / "ckpt" / "model")
    tokenizer.save_pretrained(tmp_path / "ckpt" / "tokenizer")
    m, _ = load_checkpoint(tmp_path / "ckpt")
    m2 = load_pretrained(str(tmp_path / "ckpt" / "model"), tokenizer)
    for model in (m, m2):
        assert model.use_kernels is False
        model.train()
        model.eval()
        assert model.use_kernels is False


def test_text_questions_reach_the_thinker_with_their_numbers_as_digits(tokenizer):
    """A transcript (numbers in words, as evaluation's text input and the service's typed questions may
    say them) and the written question (digits) give the thinker the same prompt, for every kind the
    generator makes; words that are not numbers, and digits, stay as they are."""
    from models.tokenizer import numbers_as_digits
    from tasks.synth.builtin import generate_problems
    from tasks.synth.verbalize import speakable

    for p in generate_problems(40, seed=5):
        assert text_prompt(tokenizer, speakable(p.question)) == text_prompt(tokenizer, p.question), p.question
    assert numbers_as_digits("What is forty thousand five hundred and six minus one thousand and two?") == \
        "What is 40506 minus 1002?"
    assert numbers_as_digits("Tom paid twelve dollars and fifty cents.") == "Tom paid 12 dollars and 50 cents."
    assert numbers_as_digits("Add 7 and two, then the apples.") == "Add 7 and 2, then the apples."
    assert numbers_as_digits("  ") == "  " and numbers_as_digits("") == ""
    said = tokenizer.decode(text_prompt(tokenizer, "What is fifty-nine plus sixty-three?"))
    assert "59 plus 63" in said and "fifty" not in said
