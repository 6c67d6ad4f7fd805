import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fidan.errors import FidanError
from fidan.tokenizer.bpe import EOS, SPECIAL_TOKENS, FidanTokenizer, train_tokenizer
from fidan.tokenizer.chat import render

CORPUS = ["Merhaba dünya! Bugün hava çok güzel, değil mi? İstanbul'da yağmur yağıyor.",
          "Hello world. The quick brown fox jumps over the lazy dog."] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400, min_frequency=2)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abcçdefgğhıijklmnoöprsştuüvyzABCÇDEFGĞHIİJKLMNOÖPRSŞTUÜVYZ '.,!?\n0123456789"))
def test_round_trip_turkish_and_byte_accounting(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    lengths = tok.token_byte_lengths()
    assert sum(int(lengths[i]) for i in ids) == len(text.encode("utf-8"))


def test_merhaba_dunya(tok):
    ids = tok.encode("Merhaba dünya")
    assert tok.decode(ids) == "Merhaba dünya"
    assert len(ids) < len("Merhaba dünya".encode())  # merges learned on the corpus apply
    assert "".join(tok.pieces(ids)) == "Merhaba dünya"


def test_special_tokens_are_single_ids_and_cannot_be_forged(tok):
    ids = {t: tok.id_of(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    forged = tok.encode(f"a {EOS} b")
    assert ids[EOS] not in forged
    assert tok.decode(forged) == f"a {EOS} b"


def test_save_load_and_damaged_file(tok, tmp_path):
    tok.save(tmp_path / "tokenizer.json")
    again = FidanTokenizer.load(tmp_path)
    assert again.encode("dünya") == tok.encode("dünya")
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    with pytest.raises(FidanError, match="tokenizer.json.*cannot read"):
        FidanTokenizer.load(tmp_path / "tokenizer.json")


def test_chat_template_masks_only_assistant_tokens(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Selam"},
                {"role": "assistant", "content": "Merhaba!"}]
    ids, mask = render(tok, messages)
    assert len(ids) == len(mask)
    learned = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(learned) == "Merhaba!<|end|>"
    prompt, _ = render(tok, messages[:2], add_generation_prompt=True)
    assert prompt[-1] == tok.id_of("<|assistant|>")
    assert ids[:len(prompt)] == prompt  # training and inference render the same prefix
    with pytest.raises(ValueError, match="role"):
        render(tok, [{"role": "robot", "content": "x"}])


def test_a_vocabulary_smaller_than_asked_is_said_with_the_reason(tmp_path, capsys):
    from conftest import micro_config
    from fidan.pipeline import run_stage
    from fidan.rundir import RunDir
    src = tmp_path / "short.txt"
    src.write_text("The river runs past the mill, and the miller sings to the river every morning.\n" * 40)
    cfg = micro_config(tmp_path / "runs", "short", f"data.source={src}", "data.steps=", "tokenizer.vocab_size=2048")
    run = RunDir.for_config(cfg)
    run_stage(cfg, run, "data")
    summary = run_stage(cfg, run, "tokenizer")
    out = capsys.readouterr().out
    assert summary["vocab_asked"] == 2048 and summary["vocab_size"] < 2048
    assert f"came out at {summary['vocab_size']:,} tokens of the 2,048 asked" in out
    assert "12 distinct words" in out and "--tokenizer.min_frequency=2" in out
