"""Your own text to your own chat model: the whole pipeline on plain text files with no conversations."""
import json
import random

import pytest

from conftest import MICRO
from fidan.cli import main
from fidan.records import read_jsonl

PEOPLE = ["Marta", "Osman", "Ilse", "Bruno", "Selin", "Tomas", "Aylin", "Piotr"]
PLACES = ["the mill", "the harbour", "the orchard", "the bakery", "the old bridge", "the library", "the market"]
ACTS = ["repaired the roof of", "painted a picture of", "walked every morning to", "sold apples near",
        "wrote a long letter about", "planted three trees behind", "sang quietly inside", "counted the boats at"]
WHEN = ["in the spring", "after the long winter", "during the harvest festival", "on a rainy Tuesday",
        "before the flood of that year", "while the village slept"]

ENDINGS = ["", ", and the neighbours still talk about it", " with {n} friends", ", as {who} had asked",
           " because the weather was kind", ", which nobody expected", " for the {n}th time", ""]


def prose(seed: int, paragraphs: int) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = [f"{rng.choice(PEOPLE)} {rng.choice(ACTS)} {rng.choice(PLACES)} {rng.choice(WHEN)}"
                     + rng.choice(ENDINGS).format(n=rng.randrange(2, 90), who=rng.choice(PEOPLE)) + "."
                     for _ in range(rng.randrange(3, 6))]
        out.append(" ".join(sentences))
    return "\n\n".join(out) + "\n"


@pytest.mark.slow
def test_the_pipeline_on_a_folder_of_plain_text_ends_in_a_chat_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FIDAN_PROGRESS_SECONDS", "0")   # off a terminal: a progress line at every update
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "village.txt").write_text(prose(1, 120))
    (folder / "harbour.txt").write_text(prose(2, 60))
    (folder / "letters.md").write_text("# Letters\n\n" + prose(3, 40))
    args = [f"--{o}" for o in MICRO] + [f"--run.root={tmp_path / 'runs'}", "--run.name=mine",
                                        f"--data.source={folder}", "--data.synth_conversations=120",
                                        "--data.synth_heldout=12"]
    assert main(["pipeline", *args]) == 0
    out = capsys.readouterr().out
    for stage in ("data", "tokenizer", "tokens", "pretrain", "sample", "sft", "reward", "rlhf", "eval", "report"):
        assert f"✓ {stage}" in out, stage
    run = tmp_path / "runs" / "mine"
    # SFT trained on conversations made from the text (and general ones), and says so
    conversations = [c for _, c in read_jsonl(run / "data/sft/train.jsonl")]
    kinds = {c["kind"] for c in conversations}
    assert {"recall", "read", "summary", "continue", "refusal", "greeting"} <= kinds
    texts = {f.read_text() for f in folder.iterdir()}
    made = [c for c in conversations if c.get("reference")]
    flat = [" ".join(t.split()) for t in texts]
    assert made and all(any(c["reference"] in t for t in flat) for c in made)   # the answers are its sentences
    assert "conversations (made from your text" in out
    # held-out questions come from the validation documents only, and SFT scores them before and after
    heldout = [q for _, q in read_jsonl(run / "data/eval/text.jsonl")]
    assert heldout and all(q["source"].endswith("#tail") for q in heldout)
    train_answers = {c["reference"] for c in made}
    assert not {q["answer"] for q in heldout} & train_answers
    sft = json.loads((run / "stages/sft.json").read_text())["summary"]
    assert sft["sft_text_n"] == sft["base_text_n"] == min(6, len(heldout))
    assert "questions on your text" in out and "0.0% facts" not in out
    # the chat model is a chat model, and reward/RLHF say where their pairs came from
    assert json.loads((run / "sft/model.json").read_text())["chat"] is True
    reward = json.loads((run / "stages/reward.json").read_text())["summary"]
    assert "synthesised from your text" in reward["judge_source"] and reward["judge_pairs"] > 0
    assert "fidan label" in out
    assert "judge win rate over SFT" in out and "ppo: \n" not in out
    for line in ("  cleaning: 1 shards", "  pretrain: 40/40 step (100%)", "  judge sampling: ",
                 "  held-out answers: ", "  eval pretrain: "):   # progress of the long parts, as log lines
        assert line in out, line
    assert "answers/s, ETA " in out and "tasks (100%)" in out
    report = (run / "report.md").read_text()
    assert "your text, questions in chat form: word F1" in report


def test_synthesised_questions_follow_the_documents_language_and_come_from_their_sentences():
    from fidan.data.synth import synthesise
    from fidan.records import Document
    tr = ("Köyün değirmeni nehrin kıyısındadır ve her sabah çalışır. Değirmenci Mehmet unu pazara götürür. "
          "Pazarda kadınlar ekmek için un alır. Akşam olunca değirmen durur ve köy sessizleşir.\n\n") * 3
    en = prose(5, 20)
    train = [Document("tr.txt", tr, "tr.txt", {"lang": "tr"}), Document("en.txt", en, "en.txt", {"lang": "en"})]
    val = [Document("en.txt#tail", prose(6, 6), "en.txt", {"lang": "en", "part": "tail"})]
    sets = synthesise(train, val, 200, 20, 0, lambda d: d.meta["lang"])
    made = [c for c in sets["sft/train"] if c.get("reference")]
    turkish = [c for c in made if c["lang"] == "tr"]
    assert turkish and all(c["messages"][0]["content"].startswith(("Metin ", "Bu paragrafı", "Bu metni"))
                           or "Bu parça" in c["messages"][0]["content"] for c in turkish)
    assert all(c["reference"] in " ".join((tr if c["lang"] == "tr" else en).split()) for c in made)
    assert {c["kind"] for c in sets["sft/train"]} >= {"recall", "read", "summary", "continue", "refusal"}
    heldout = sets["eval/text"]
    assert heldout and {q["kind"] for q in heldout} <= {"read", "summary"}   # answerable from the prompt
    assert all(q["answer"] in " ".join(q["question"].split()) for q in heldout if q["kind"] == "read")
