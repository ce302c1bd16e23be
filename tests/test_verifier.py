"""`marco-eval verifier`: the head fitted on cached hidden states, chosen by validation AUROC,
saved as a sequence-classification checkpoint that scores exactly as the head did."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from marco_eval.train import verifier
from marco_eval.train.verifier_features import Features


def test_the_head_learns_a_separable_direction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    y = x[:, 3] > 0.2
    w = verifier.fit_head(x, y, l2=1e-3)
    assert np.argmax(np.abs(w)) == 3 and w[3] > 0
    assert ((x @ w > np.median(x @ w)) == y).mean() > 0.8


def features(n_problems=40, k=4, hidden=8, layers=(1, 2), seed=0) -> Features:
    """Layer 2 knows which samples are right (within every problem); layer 1 only knows noise."""
    rng = np.random.default_rng(seed)
    problem = np.repeat(np.arange(n_problems), k)
    label = rng.random(n_problems * k) < 0.5
    last = rng.normal(size=(n_problems * k, len(layers), hidden)).astype(np.float32)
    last[:, 1, 0] += np.where(label, 2.0, -2.0)
    return Features(problem=problem, label=label, validation=problem % 5 == 0, reward=rng.random(n_problems * k),
                    last=last, mean=last.copy(), layers=list(layers))


def test_selection_picks_the_layer_that_separates_within_problems():
    c = verifier.VerifierConfig(layers=[1, 2], l2=[1e-2])
    candidates, chosen = verifier.select(features(), c, log=lambda s: None)
    assert len(candidates) == 4  # 2 poolings x 2 layers x 1 strength
    assert (chosen["pooling"], chosen["layer"]) == ("last", 2)
    assert chosen["within"][0] > 0.95 and chosen["pooled"][0] > 0.95
    noise = next(r for r in candidates if r["pooling"] == "last" and r["layer"] == 1)
    assert noise["within"][1] < 0.5 < noise["within"][2]  # its CI spans chance


def test_config_errors_name_the_key(tmp_path):
    from marco_eval.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape("unknown key 'layer' in override 'layer=3'; did you mean 'layers'?")):
        verifier.load_config(None, ["layer=3"])
    with pytest.raises(ConfigError, match=re.escape("l2=[0.0]: strengths must be positive")):
        verifier.load_config(None, ["l2=[0]"])
    with pytest.raises(ConfigError, match=re.escape("layers.0='x': expected int (from override 'layers=x')")):
        verifier.load_config(None, ["layers=x"])
    assert verifier.load_config(None, ["layers=[4, 8]", "max_problems=10"]).layers == [4, 8]
    assert verifier.load_config(None, ["layers=8"]).layers == [8]  # one value for a list: a list of one


@pytest.mark.slow
def test_the_checkpoint_scores_as_the_fitted_head(tmp_path, smollm_path, mgsm_data):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from marco_eval.train import bank

    # a GSM8K-shaped file and a bank of hand-written samples (labels by a rule the head can learn)
    tok = AutoTokenizer.from_pretrained(smollm_path)
    gsm = tmp_path / "train.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"}) + "\n"
                           for i in range(30)))
    items = bank.read_gsm8k(gsm)
    records = []
    for it in items:
        i = it.index
        texts = [f"{i} + {i} = {2 * i}. <Output>{2 * i}</Output>", f"I think it is {i + 1}. <Output>{i + 1}</Output>"]
        records.append({"problem_id": it.problem.id, "index": i, "split": bank.split_of(it.problem.id),
                        "gold": it.problem.answer,
                        "samples": [{"token_ids": tok(t, add_special_tokens=False)["input_ids"], "answer": None,
                                     "correct": j == 0, "finish": "stop", "tokens": 0, "reward": 0.5}
                                    for j, t in enumerate(texts)]})
    path = tmp_path / "bank.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"settings": {"model": smollm_path, "config": "self_consistency", "overrides": {"dtype": "float32"}}},
        *records]))
    out = tmp_path / "verifier"
    c = verifier.load_config(None, [f"bank={path}", f"output_dir={out}", f"features_dir={tmp_path / 'features'}",
                                    f"data={gsm}", "layers=[6, 12]", "l2=[0.01]"])
    summary = verifier.train(c, log=lambda s: None)
    assert (out / "training_summary.json").is_file() and not (tmp_path / "verifier.tmp").exists()
    assert summary["chosen"]["pooling"] == "last" and summary["chosen"]["layer"] in (6, 12)
    assert summary["samples"]["train"] + summary["samples"]["validation"] == 60
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()  # as the features
    assert model.config.num_hidden_layers == summary["chosen"]["layer"] and model.config.num_labels == 1
    # the checkpoint's logit on a validation sample equals the head on that sample's cached feature
    feats = np.load(sorted((tmp_path / "features").glob("*.npz"))[0])
    layer = [6, 12].index(summary["chosen"]["layer"])
    from marco_eval.engine import Engine
    from marco_eval.train.synth import task_prompt

    engine = Engine.from_settings("self_consistency", pretrained=smollm_path, dtype="float32")
    ids = (engine.policy.encode(engine.prompt_text(task_prompt(items[0].problem))) + records[0]["samples"][0]["token_ids"]
           + engine.policy.encode(c.suffix))
    assert model.config.marco_eval_verifier["suffix"] == c.suffix
    with torch.no_grad():
        logit = float(model(input_ids=torch.tensor([ids])).logits[0, 0])
    w = model.score.weight[0].detach().float().numpy()
    assert logit == pytest.approx(float(feats["last"][0, layer].astype(np.float32) @ w), abs=0.02)  # fp16 cache
    # the summary alone (committable) rebuilds the same checkpoint
    again = verifier.assemble(out / "training_summary.json", tmp_path / "assembled")
    rebuilt = AutoModelForSequenceClassification.from_pretrained(again, dtype=torch.float32).eval()
    with torch.no_grad():
        assert float(rebuilt(input_ids=torch.tensor([ids])).logits[0, 0]) == pytest.approx(logit, abs=1e-4)


SUFFIX = "\nIs it right?"


@pytest.fixture(scope="module")
def verifier_checkpoints(tmp_path_factory, smollm_path):
    """Two 6-layer verifiers on smollm2 with the same random head: one whose body is the
    policy's own layers, one whose final norm differs (so it is a model of its own)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("verifiers")
    w = np.random.default_rng(0).normal(size=576).astype(np.float32) / 24  # smollm2's hidden size
    tok = AutoTokenizer.from_pretrained(smollm_path)
    verifier.save_checkpoint(smollm_path, {"layer": 6, "l2": 0.01, "weights": w}, tok.eos_token_id, tok, out / "own",
                             SUFFIX)
    model = AutoModelForSequenceClassification.from_pretrained(out / "own")
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    model.save_pretrained(out / "other")
    tok.save_pretrained(out / "other")
    return out / "own", out / "other"


@pytest.mark.slow
def test_the_backend_values_sequences_as_the_checkpoint_does(smollm_path, verifier_checkpoints):
    import torch
    from transformers import AutoModelForSequenceClassification

    from marco_eval.backends.hf import TransformersPolicy
    from marco_eval.search.policy import Continue, Verifier

    for path, shared in zip(verifier_checkpoints, (True, False)):
        policy = TransformersPolicy(smollm_path, dtype="float32", max_batch=4, verifier=str(path))
        assert isinstance(policy, Verifier) and policy.verifier.shares_policy is shared
        prompt = tuple(policy.encode("Tom has 3 apples and buys 4 more. How many apples?\n"))
        gens = policy.generate([Continue(prompt, 12, temperature=1.0, seed=s) for s in range(3)])  # cached rows
        seqs = [prompt + tuple(g.token_ids) for g in gens] + [prompt]  # the bare prompt: nothing cached for it
        values = policy.value_many(seqs)
        direct = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        suffix = tuple(policy.encode(SUFFIX))  # the checkpoint reads every sequence with its suffix
        with torch.no_grad():
            expected = [float(torch.sigmoid(direct(input_ids=torch.tensor([s + suffix])).logits[0, 0])) for s in seqs]
        assert values == pytest.approx(expected, abs=1e-4)
        assert len(set(round(v, 4) for v in values)) > 1  # the head does tell sequences apart


@pytest.mark.slow
def test_a_search_with_the_verifier_as_its_reward_on_the_real_backend(smollm_path, verifier_checkpoints):
    from marco_eval.backends.hf import TransformersPolicy
    from marco_eval.search import Search, SearchConfig, run_searches
    from marco_eval.search.reward import VerifierReward

    policy = TransformersPolicy(smollm_path, dtype="float32", max_batch=4, verifier=str(verifier_checkpoints[0]))
    config = SearchConfig(simulations=2, children=2, action="mini_step", mini_step_tokens=6, rollout_max_tokens=12,
                          final_answer="best_reward")
    prompt = policy.encode("What is 2 + 3?\n")
    (result,) = run_searches([Search(config, prompt, policy, max_new_tokens=24,
                                     reward=VerifierReward(str(verifier_checkpoints[0])))], policy)
    values = policy.value_many([tuple(prompt) + tuple(result.tree.completion_ids(r)) for r in result.tree.rollouts])
    assert [r.reward for r in result.tree.rollouts] == pytest.approx(values, abs=1e-5)
    assert max(values) == pytest.approx(max(r.reward for r in result.rollouts))


@pytest.mark.slow
def test_tree_check_recomputes_verifier_values_with_the_checkpoint_alone(tmp_path, capsys, smollm_path,
                                                                        verifier_checkpoints):
    import json

    from marco_eval.backends.hf import TransformersPolicy
    from marco_eval.cli import main as cli_main
    from marco_eval.search import Search, SearchConfig, run_searches
    from marco_eval.search.export import tree_document
    from marco_eval.search.reward import VerifierReward

    own = str(verifier_checkpoints[0])
    policy = TransformersPolicy(smollm_path, dtype="float32", max_batch=4, verifier=own)
    config = SearchConfig(simulations=2, children=2, action="mini_step", mini_step_tokens=6, rollout_max_tokens=12)
    search = Search(config, policy.encode("What is 2 + 3?\n"), policy, max_new_tokens=24, reward=VerifierReward(own))
    (result,) = run_searches([search], policy)
    doc = tree_document(search, result, 0, "What is 2 + 3?\n", dtype="float32")
    tree = tmp_path / "mgsm_en_0_0_0.json"
    tree.write_text(json.dumps(doc))
    assert cli_main(["tree", "check", str(tree), "--device", "cpu"]) == 0  # the file names its verifier
    assert "1 sound" in capsys.readouterr().out
    doc["rollouts"][0]["reward"] = min(1.0, doc["rollouts"][0]["reward"] + 0.05)  # beyond fp32's 0.05 log-odds
    tree.write_text(json.dumps(doc))
    assert cli_main(["tree", "check", str(tree)]) == 1
    assert "rollout 0: reward" in capsys.readouterr().out
    doc["reward"] = "verifier:/moved/away"
    tree.write_text(json.dumps(doc))
    assert cli_main(["tree", "check", str(tree)]) == 2
    err = capsys.readouterr().err.strip()
    assert "which is not here; pass --verifier PATH" in err and "\n" not in err
    assert cli_main(["tree", "check", str(tree), "--verifier", str(verifier_checkpoints[1])]) == 1  # another head


@pytest.mark.slow
def test_verifier_dtype_values_apart_from_a_bf16_policy_in_its_own_precision(smollm_path, verifier_checkpoints):
    import torch
    from transformers import AutoModelForSequenceClassification

    from marco_eval.backends.hf import TransformersPolicy

    own = str(verifier_checkpoints[0])
    shared = TransformersPolicy(smollm_path, dtype="bfloat16", max_batch=4, verifier=own)
    apart = TransformersPolicy(smollm_path, dtype="bfloat16", max_batch=4, verifier=own, verifier_dtype="float32")
    assert shared.verifier.shares_policy and not apart.verifier.shares_policy  # the same body, another precision
    assert apart.verifier.model.dtype == torch.float32
    seq = tuple(apart.encode("Tom has 3 apples and buys 4 more. How many apples? 7"))
    direct = AutoModelForSequenceClassification.from_pretrained(own, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = float(torch.sigmoid(direct(input_ids=torch.tensor([seq + apart.verifier.suffix])).logits[0, 0]))
    assert apart.value_many([seq]) == pytest.approx([expected], abs=1e-5)


def test_a_reward_that_is_not_a_verifier_is_one_line(tmp_path):
    from marco_eval import settings
    from marco_eval.engine import Engine
    from marco_eval.errors import ConfigError

    with pytest.raises(ConfigError, match="reward='/nowhere': use confidence, or the folder"):
        Engine.from_settings(None, pretrained="test/fake", reward="/nowhere")
    settings.build(None, reward=str(tmp_path), backend="vllm")  # vLLM runs it beside the engine (test_vllm_real)


@pytest.mark.slow
def test_the_engine_searches_with_reward_path_and_fingerprints_the_verifier(smollm_path, verifier_checkpoints):
    from marco_eval.engine import Engine

    own = str(verifier_checkpoints[0])
    engine = Engine.from_settings("self_consistency", pretrained=smollm_path, dtype="float32", reward=own,
                                  samples=3, chat_template="off")
    (result,) = engine.run([engine.make_search("What is 2 + 3?\n", max_gen_toks=10)])
    values = engine.policy.value_many([tuple(result.tree.prompt_ids) + tuple(result.tree.completion_ids(r))
                                       for r in result.tree.rollouts])
    assert [r.reward for r in result.rollouts] == pytest.approx(values, abs=1e-5)
    assert all(0 < r.confidence <= 1 for r in result.rollouts)
    plain = Engine.from_settings("self_consistency", pretrained=smollm_path, dtype="float32", samples=3,
                                 chat_template="off")
    (unvalued,) = plain.run([plain.make_search("What is 2 + 3?\n", max_gen_toks=10)])
    # the verifier only values the samples: the same seeds draw the same samples as without it
    assert [r.token_ids for r in unvalued.tree.rollouts] == [r.token_ids for r in result.tree.rollouts]
    assert [r.confidence for r in unvalued.rollouts] == pytest.approx([r.confidence for r in result.rollouts])
    other = Engine.from_settings("self_consistency", pretrained=smollm_path, dtype="float32", samples=3,
                                 chat_template="off", reward=str(verifier_checkpoints[1]))
    assert len({engine.fingerprint(), plain.fingerprint(), other.fingerprint()}) == 3
