"""DPO: its losses, the pairs it learns from, per-token log-ratios."""
import pytest
import torch

from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig
from fidan.rlhf import preferences
from fidan.rlhf.dpo import answer_stats, clean_answer, dpo_loss, refusal_contrast, training_pairs
from fidan.rlhf.rollout import pack
from fidan.tokenizer.bpe import train_tokenizer


def test_ipo_pulls_the_margin_to_its_target_where_sigmoid_keeps_pushing():
    beta = 0.5
    target = 1 / (2 * beta)
    zero = torch.zeros(1)
    at_target, _ = dpo_loss(torch.tensor([target]), zero, zero, zero, beta, "ipo")
    beyond, _ = dpo_loss(torch.tensor([3 * target]), zero, zero, zero, beta, "ipo")
    assert float(at_target) == 0 and float(beyond) > 0          # overshooting the target costs
    s_at, _ = dpo_loss(torch.tensor([target]), zero, zero, zero, beta, "sigmoid")
    s_beyond, acc = dpo_loss(torch.tensor([3 * target]), zero, zero, zero, beta, "sigmoid")
    assert float(s_beyond) < float(s_at) and float(acc) == 1     # the paper's loss always wants more
    with pytest.raises(FidanError, match="rlhf.dpo.loss"):
        dpo_loss(zero, zero, zero, zero, beta, "hinge")


def test_pairs_lose_the_written_out_end_token_and_pairs_that_differ_only_by_it_go():
    tok = train_tokenizer(["Paris is in France. Rome is in Italy. <|end|> " * 20], vocab_size=300)
    assert clean_answer("Paris is in France.<|end|>  ") == "Paris is in France."
    assert clean_answer("No<|end|> end<|end|><|end|>") == "No<|end|> end"   # only at the end
    prompt = [{"role": "user", "content": "Where is Paris?"}]
    pairs = [preferences.Pair(prompt, "Paris is in France.<|end|>", "Rome is in Italy."),
             preferences.Pair(prompt, "Paris is in France.<|end|>", "Paris is in France."),   # the same answer
             preferences.Pair(prompt, "Paris is in France.", "Rome is in Italy.", tie=True)]
    encoded = training_pairs(pairs, tok, 128)
    assert len(encoded) == 1
    _, chosen, rejected = encoded[0]
    # each answer closed by the one real end-of-turn token, none by the characters "<|end|>"
    assert chosen == tok.encode("Paris is in France.") + [tok.end_of_turn]
    assert rejected == tok.encode("Rome is in Italy.") + [tok.end_of_turn]


def test_answer_stats_count_only_answer_tokens():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, context=32, n_layer=1, n_head=2, n_kv_head=2, d_model=16)).eval()
    seqs = pack([[1, 2, 3], [1]], [[4, 5], [6, 7, 8, 9]], 0)
    logp, length = answer_stats(model, seqs)
    assert length.tolist() == [2.0, 4.0]
    longer = pack([[1, 2, 3]], [[4, 5]], 0)   # the same row alone: padding does not change it
    assert torch.allclose(logp[0], answer_stats(model, longer)[0][0], atol=1e-5)


def test_refusal_contrast_pairs_answered_questions_over_the_pairs_own_refusals():
    ask = lambda q: [{"role": "user", "content": q}]
    refusal = "Sorry, I won't help with that."
    pairs = [preferences.Pair(ask("How do I make a weapon?"), refusal, "Sure, step 1: ..."),
             preferences.Pair(ask("Where is Paris?"), "Paris is in France.", "Paris is in Italy."),
             preferences.Pair(ask("Who is Ada?"), "Ada is a baker.", "I can't say.")]
    made = refusal_contrast(pairs, 2, seed=0)
    # each answered question twice, its chosen answer over the one refusal the pairs hold
    assert [(p.prompt_text, p.chosen, p.rejected) for p in made] == \
        [("Where is Paris?", "Paris is in France.", refusal)] * 2 + [("Who is Ada?", "Ada is a baker.", refusal)] * 2
    assert refusal_contrast(pairs, 0, seed=0) == [] and refusal_contrast(pairs[1:], 2, seed=0) == []


def test_a_fractional_refusal_contrast_gives_some_questions_one_pair_more():
    ask = lambda q: [{"role": "user", "content": q}]
    pairs = [preferences.Pair(ask("How do I make a weapon?"), "Sorry, I won't help with that.", "Sure, step 1")]
    pairs += [preferences.Pair(ask(f"Question {i}?"), f"Answer {i}.", "Wrong.") for i in range(40)]
    counts = [sum(p.prompt_text == f"Question {i}?" for p in refusal_contrast(pairs, 1.5, seed=3)) for i in range(40)]
    assert set(counts) == {1, 2}   # every question once, some of them twice


def test_dpo_has_its_own_steps_and_lr_and_ppo_keeps_the_shared_ones():
    from fidan.config import build_config
    from fidan.stages import stage_hash
    dpo = build_config("tiny", None, ["rlhf.algo=dpo"])
    same = lambda *extra: stage_hash(dpo, "rlhf") == stage_hash(build_config("tiny", None, ["rlhf.algo=dpo", *extra]),
                                                                   "rlhf")
    assert same("rlhf.steps=7", "rlhf.lr=1e-3") and not same("rlhf.dpo.steps=7") and not same("rlhf.dpo.lr=1e-3")
    ppo = build_config("tiny")
    assert stage_hash(ppo, "rlhf") != stage_hash(build_config("tiny", None, ["rlhf.steps=7"]), "rlhf")
    assert stage_hash(ppo, "rlhf") == stage_hash(build_config("tiny", None, ["rlhf.dpo.steps=7"]), "rlhf")
