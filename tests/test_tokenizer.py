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


def test_spread_batches_keeps_about_the_cap_from_all_over_the_file():
    from fidan.records import spread_batches
    sizes = [100] * 40
    keep = spread_batches(sizes, 1000)
    assert len(keep) == 10 and keep[0] < 4 and keep[-1] >= 36   # evenly over the file, not its head
    assert spread_batches(sizes, 0) == list(range(40)) == spread_batches(sizes, 10**9)
    assert spread_batches(sizes, 1) == [0]   # a cap below one batch still trains on one


def test_the_tokenizer_trains_on_at_most_max_bytes_of_a_large_split(tmp_path, capsys):
    from conftest import micro_config
    from fidan.pipeline import run_stage
    from fidan.records import text_batches
    from fidan.rundir import RunDir
    from fidan.tokenizer import stage
    src = tmp_path / "docs.jsonl"
    # two halves that share no words: a tokenizer trained on the file's head alone never sees "zq"
    head = [f'{{"text": "alpha beta gamma delta {i} epsilon."}}' for i in range(400)]
    tail = [f'{{"text": "zqzq zqzx zqzy {i} zqzw."}}' for i in range(400)]
    src.write_text("\n".join(head + tail) + "\n")
    cfg = micro_config(tmp_path / "runs", "cap", f"data.source={src}", "data.steps=", "data.split=hash",
                       "tokenizer.vocab_size=300", "tokenizer.max_bytes=8000")
    run = RunDir.for_config(cfg)
    run_stage(cfg, run, "data")
    train = run.path / "data" / "clean" / "train.parquet"
    total = sum(len(t.encode()) for b in text_batches(train) for t in b)
    summary = run_stage(cfg, run, "tokenizer")
    assert summary["split_bytes"] == total > 8000 >= summary["trained_on_bytes"] > 8000 - 2 * stage.BATCH * 40
    assert f"trained on {summary['trained_on_bytes']:,} of the split's {total:,} bytes" in capsys.readouterr().out
    from fidan.tokenizer.bpe import FidanTokenizer
    tok = FidanTokenizer.load(run.path / "tokenizer" / "tokenizer.json")
    assert len(tok.encode("zqzq")) < 4 and len(tok.encode("alpha")) < 5   # merges from both halves
