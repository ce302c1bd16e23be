"""The MCTS engine against a scripted fake policy: no model, milliseconds per test."""

from __future__ import annotations

import json
import math

import pytest

from fakes import EOS, TOP5_HIGH, ScriptedPolicy
from marco_eval.answers import extract_answer
from marco_eval.search import Search, SearchConfig, drive, rollout_reward, run_searches, token_confidence
from marco_eval.search.config import REFLECTION_PHRASE
from marco_eval.search.export import tree_document
from marco_eval.search.tree import Rollout

PROMPT = "Q: how many?\n"


def number_answer(text):
    return extract_answer(text, "flexible")


def make(policy, until=("</Output>",), max_new_tokens=400, reward=rollout_reward, **cfg):
    return Search(SearchConfig(**cfg), policy.encode(PROMPT), policy, max_new_tokens=max_new_tokens,
                  until=until, answer_fn=number_answer, reward=reward)


def steps_script(n_steps=3, answer="7"):
    """Writes `n_steps` blank-line-separated steps, then the answer; ends with EOS."""
    def script(prefix, seed):
        done = prefix.count("Step ")
        steps = "".join(f"Step {i} s{seed % 5}.\n\n" for i in range(done, n_steps))
        return steps + f"<Output>{answer}</Output>\x00"
    return script


def fixed_text_script(full: str):
    """A model that always writes the same answer: continue `full` from where the path is."""
    return lambda prefix, seed: full[len(prefix) - len(PROMPT):]


def check_visit_invariant(search):
    for n in search.tree.nodes:
        kids = sum(search.tree.nodes[c].visits for c in n.children)
        assert n.visits == n.rollout_visits + kids, f"node {n.id}"


# ---------------------------------------------------------------- reward
def test_confidence_of_top1_token():
    assert token_confidence(math.log(0.6), TOP5_HIGH) == pytest.approx(0.6 / 0.97)


def test_confidence_of_token_outside_top5_joins_denominator():
    lp = math.log(0.01)
    assert token_confidence(lp, TOP5_HIGH) == pytest.approx(0.01 / (0.97 + 0.01))


def test_confidence_of_lower_ranked_token_inside_top5():
    assert token_confidence(math.log(0.1), TOP5_HIGH) == pytest.approx(0.1 / 0.97)


def test_rollout_reward_is_mean_and_skips_inserted_tokens():
    lps = [math.log(0.6), None, math.log(0.2)]
    top = [TOP5_HIGH, None, TOP5_HIGH]
    assert rollout_reward(lps, top) == pytest.approx((0.6 / 0.97 + 0.2 / 0.97) / 2)
    assert rollout_reward([None], [None]) == 0.0


# ---------------------------------------------------------------- actions
def test_step_action_ends_at_delimiter():
    pol = ScriptedPolicy(steps_script())
    s = make(pol, simulations=1, children=2)
    drive(s, pol)
    kids = [s.tree.nodes[c] for c in s.tree.root.children]
    assert len(kids) == 2
    for k in kids:
        text = pol.decode(k.action_ids)
        assert text.startswith("Step 0") and text.endswith("\n\n") and text.count("\n\n") == 1
        assert k.finish == "\n\n" and not k.terminal


def test_custom_step_delimiter():
    pol = ScriptedPolicy(lambda prefix, seed: "a; b; c<Output>1</Output>")
    s = make(pol, simulations=1, children=1, step_delimiters=[";"])
    drive(s, pol)
    assert pol.decode(s.tree.nodes[1].action_ids) == "a;"


def test_mini_step_actions_are_exactly_n_tokens_unless_terminal():
    pol = ScriptedPolicy(fixed_text_script("First 2 + 3 = 5.\n\nThen 5 * 2 = 10.\n\n<Output>10</Output>\x00"))
    s = make(pol, simulations=10, children=1, action="mini_step", mini_step_tokens=7)
    drive(s, pol)
    for n in s.tree.nodes[1:]:
        if n.terminal:
            assert len(n.action_ids) <= 7
        else:
            assert len(n.action_ids) == 7, pol.decode(n.action_ids)
    assert any(n.terminal for n in s.tree.nodes[1:])


def test_step_that_never_ends_is_capped_by_action_max_tokens():
    pol = ScriptedPolicy(lambda prefix, seed: "x" * 1000)
    s = make(pol, simulations=2, children=1, action_max_tokens=10, rollout_max_tokens=20, max_new_tokens=100)
    r = drive(s, pol)
    assert len(s.tree.nodes[1].action_ids) == 10 and s.tree.nodes[1].finish == "length"
    assert r.text.startswith("x")  # bounded, and still returns text


# ---------------------------------------------------------------- terminal states
def test_answer_end_and_eos_are_terminal():
    pol = ScriptedPolicy(lambda prefix, seed: "<Output>3</Output> trailing")
    s = make(pol, simulations=1, children=1)
    drive(s, pol)
    assert s.tree.nodes[1].terminal and s.tree.nodes[1].finish == "</Output>"

    pol = ScriptedPolicy(lambda prefix, seed: "done\x00")
    s = make(pol, simulations=1, children=1, step_delimiters=["\n\n"])
    drive(s, pol)
    assert s.tree.nodes[1].terminal and s.tree.nodes[1].finish == "eos"
    assert s.tree.nodes[1].action_ids[-1] == EOS


def test_task_stop_string_is_terminal_and_cut_from_text():
    pol = ScriptedPolicy(lambda prefix, seed: "The answer is 12.\nQuestion: next")
    s = make(pol, until=("Question:",), simulations=1, children=1)
    r = drive(s, pol)
    assert s.tree.nodes[1].terminal
    assert r.text == "The answer is 12.\n"
    assert r.answer == "12"


def test_token_budget_makes_paths_terminal():
    pol = ScriptedPolicy(lambda prefix, seed: "abc " * 100)
    s = make(pol, simulations=3, children=1, action="mini_step", mini_step_tokens=8, max_new_tokens=20)
    r = drive(s, pol)
    assert all(len(s.tree.path_ids(n)) <= 20 for n in s.tree.nodes)
    assert len(r.token_ids) <= 20


def test_selecting_a_terminal_leaf_backs_up_its_reward_without_a_model_call():
    pol = ScriptedPolicy(lambda prefix, seed: "<Output>5</Output>")
    s = make(pol, simulations=5, children=1)
    drive(s, pol)
    leaf = s.tree.nodes[1]
    assert leaf.terminal and leaf.visits == 5 and leaf.rollout_visits == 5
    assert len(pol.calls) == 1  # one expansion; four re-visits cost nothing
    assert leaf.value == pytest.approx(s.tree.rollouts[0].reward)
    check_visit_invariant(s)


# ---------------------------------------------------------------- selection and backpropagation
def _manual_tree(exploration=1.0):
    pol = ScriptedPolicy(lambda p, s: "")
    s = make(pol, exploration=exploration)
    root = s.tree.root
    a = s.tree.add_child(root)
    b = s.tree.add_child(root)
    return s, root, a, b


def test_uct_prefers_higher_value_at_equal_visits():
    s, root, a, b = _manual_tree()
    root.visits, a.visits, a.value_sum, b.visits, b.value_sum = 10, 5, 4.0, 5, 3.0
    assert s.select() is a


def test_uct_explores_rarely_visited_child():
    s, root, a, b = _manual_tree()
    root.visits, a.visits, a.value_sum, b.visits, b.value_sum = 10, 9, 7.2, 1, 0.5
    # a: 0.8 + sqrt(ln 10 / 9) = 1.306;  b: 0.5 + sqrt(ln 10 / 1) = 2.017
    assert s.select() is b
    s.config.exploration = 0.0
    assert s.select() is a


def test_uct_ties_go_to_older_child():
    s, root, a, b = _manual_tree()
    root.visits, a.visits, a.value_sum, b.visits, b.value_sum = 4, 2, 1.0, 2, 1.0
    assert s.select() is a


def test_uct_formula_value():
    s, root, a, b = _manual_tree(exploration=1.5)
    root.visits, a.visits, a.value_sum = 20, 4, 3.0
    assert s.uct(root, a)[0] == pytest.approx(0.75 + 1.5 * math.sqrt(math.log(20) / 4))


def test_backpropagation_arithmetic():
    s, root, a, b = _manual_tree()
    c = s.tree.add_child(a)
    s.backpropagate(c, 0.5)
    s.backpropagate(c, 0.25)
    s.backpropagate(b, 1.0)
    assert (c.visits, c.value_sum) == (2, 0.75)
    assert (a.visits, a.value_sum) == (2, 0.75)
    assert (b.visits, b.value) == (1, 1.0)
    assert (root.visits, root.value) == (3, pytest.approx(1.75 / 3))


def test_full_search_statistics_and_invariant():
    pol = ScriptedPolicy(steps_script(n_steps=3))
    s = make(pol, simulations=6, children=3)
    drive(s, pol)
    check_visit_invariant(s)
    expansions = sum(1 for n in s.tree.nodes if n.children)
    assert len(s.tree.rollouts) == 3 * expansions
    assert s.tree.root.visits == sum(n.rollout_visits for n in s.tree.nodes)
    # every node's value is the mean of the rewards backed up through it
    for n in s.tree.nodes[1:]:
        below = [r.reward for r in s.tree.rollouts if n in s.tree.path(s.tree.nodes[r.node])]
        assert n.visits >= len(below)
        if n.visits == len(below):
            assert n.value == pytest.approx(sum(below) / len(below))


def test_expansion_is_one_batched_call_of_k_children():
    pol = ScriptedPolicy(steps_script())
    s = make(pol, simulations=1, children=4)
    drive(s, pol)
    assert len(pol.calls[0]) == 4  # expansion: 4 siblings in one call
    assert len({r.prefix for r in pol.calls[0]}) == 1
    assert len(pol.calls[1]) == 4  # their rollouts, in one call


# ---------------------------------------------------------------- reflection
def reflective_script(prefix, seed):
    if REFLECTION_PHRASE in prefix:
        return "Recount: 4.\n</Thought>\n<Output>4</Output>"
    return "Count: 3.\n</Thought>\n<Output>3</Output>"


def test_reflection_inserted_once_at_end_of_thought_in_rollout():
    pol = ScriptedPolicy(reflective_script)
    s = make(pol, strategy="sampling", samples=1, temperature=0.0, reflection="thought_end", reflection_max=1)
    r = drive(s, pol)
    assert r.text.count(REFLECTION_PHRASE) == 1
    assert r.text.index("Count: 3.") < r.text.index(REFLECTION_PHRASE) < r.text.index("Recount")
    assert r.text.count("</Thought>") == 1  # the first end-of-thought was replaced by the phrase
    assert r.answer == "4" and r.rollouts[0].reflections == 1
    roll = s.tree.rollouts[0]
    inserted = [i for i, lp in enumerate(roll.logprobs) if lp is None]
    assert pol.decode([roll.token_ids[i] for i in inserted]).strip() == REFLECTION_PHRASE
    assert roll.reward == pytest.approx(rollout_reward(roll.logprobs, roll.top5))


def test_reflection_off_leaves_text_alone():
    pol = ScriptedPolicy(reflective_script)
    s = make(pol, strategy="sampling", samples=1, temperature=0.0)
    r = drive(s, pol)
    assert REFLECTION_PHRASE not in r.text and r.answer == "3" and r.rollouts[0].reflections == 0


def test_reflection_in_step_action_and_max_two():
    calls = {"n": 0}

    def script(prefix, seed):
        calls["n"] += 1
        return f"Try {prefix.count(REFLECTION_PHRASE)}.\n</Thought>\n<Output>{prefix.count(REFLECTION_PHRASE)}</Output>"

    pol = ScriptedPolicy(script)
    s = make(pol, simulations=3, children=1, reflection="thought_end", reflection_max=2)
    r = drive(s, pol)
    first = s.tree.nodes[1]
    assert first.finish == "reflection" and first.reflections == 1 and not first.terminal
    assert r.text.count(REFLECTION_PHRASE) == 2 and r.answer == "2"


# ---------------------------------------------------------------- final answer policies
def _search_with_rollouts(final_answer):
    """root -> a (Q 0.9, 1 visit), b (Q 0.6, 3 visits); rollouts with answers 1, 2, 2, 2."""
    pol = ScriptedPolicy(lambda p, s: "")
    s = make(pol, final_answer=final_answer)
    root = s.tree.root
    a = s.tree.add_child(root, action_ids=pol.encode("A"))
    b = s.tree.add_child(root, action_ids=pol.encode("B"))
    for node, reward, ans in ((a, 0.9, "1"), (b, 0.6, "2"), (b, 0.5, "2"), (b, 0.4, "2")):
        ids = pol.encode(f"<Output>{ans}</Output>")
        s.tree.rollouts.append(Rollout(node.id, ids, [0.0] * len(ids), [[0.0]] * len(ids), 0, reward, "x", ans))
        node.rollout = len(s.tree.rollouts) - 1 if node.rollout is None else node.rollout
        s.backpropagate(node, reward)
    return s, pol


@pytest.mark.parametrize("policy,answer,path_end", [
    ("max_value", "1", 1), ("most_visited", "2", 2), ("vote", "2", 2), ("best_reward", "1", 1)])
def test_final_answer_policies(policy, answer, path_end):
    s, pol = _search_with_rollouts(policy)
    result = s.result()
    assert result.answer == answer and result.chosen_path == [0, path_end]


def test_vote_is_weighted_by_reward():
    s, pol = _search_with_rollouts("vote")
    s.tree.rollouts[0].reward = 2.0  # answer "1" now outweighs 0.6 + 0.5 + 0.4
    node, _ = s.choose()
    assert node.id == 1


def test_self_consistency_votes_over_samples():
    answers = iter(["5", "6", "6", "7", "6"])
    pol = ScriptedPolicy(lambda p, s: f"<Output>{next(answers)}</Output>")
    s = make(pol, strategy="sampling", samples=5, final_answer="vote")
    r = drive(s, pol)
    assert r.answer == "6" and r.candidates == ["5", "6", "6", "7", "6"]
    assert len(pol.calls) == 1 and len(pol.calls[0]) == 5
    check_visit_invariant(s)


# ---------------------------------------------------------------- determinism, batching, export
def seed_dependent_script(prefix, seed):
    n = prefix.count("Step ")
    if n >= 2:
        return f"<Output>{seed % 10}</Output>"
    return f"Step {seed % 1000}.\n\n"


def _tree_json(seed):
    pol = ScriptedPolicy(seed_dependent_script)
    s = make(pol, simulations=5, children=2, seed=seed)
    r = drive(s, pol)
    return json.dumps(tree_document(s, r, 0, PROMPT), sort_keys=True)


def test_same_seed_same_tree_and_answer():
    assert _tree_json(7) == _tree_json(7)
    assert _tree_json(7) != _tree_json(8)


def test_lockstep_driver_matches_one_by_one_and_batches_trees():
    prompts = ["Q1\n", "Q2 longer\n", "Q3\n"]

    def searches(pol):
        return [Search(SearchConfig(simulations=3, children=2), pol.encode(p), pol, max_new_tokens=200,
                       until=("</Output>",), answer_fn=number_answer) for p in prompts]

    solo_pol = ScriptedPolicy(seed_dependent_script)
    solo = [drive(s, solo_pol) for s in searches(solo_pol)]
    pol = ScriptedPolicy(seed_dependent_script)
    done = []
    together = run_searches(searches(pol), pol, width=3, on_done=lambda i, r: done.append(i))
    assert [r.text for r in together] == [r.text for r in solo]
    assert sorted(done) == [0, 1, 2]
    assert len(pol.calls) < len(solo_pol.calls)
    assert max(len(c) for c in pol.calls) == 6  # three trees x two children in one call


def test_exported_tree_schema_and_rewards_recompute():
    pol = ScriptedPolicy(steps_script())
    s = make(pol, simulations=4, children=2)
    r = drive(s, pol)
    doc = json.loads(json.dumps(tree_document(s, r, 3, PROMPT)))
    for key in ("request_index", "prompt", "config", "answer_text", "chosen_path", "nodes", "rollouts"):
        assert key in doc
    assert doc["request_index"] == 3 and doc["answer_text"] == r.text
    for n in doc["nodes"]:
        assert {"id", "parent", "depth", "action_text", "token_ids", "visits", "value", "terminal"} <= set(n)
    for roll in doc["rollouts"]:
        assert len(roll["token_ids"]) == len(roll["token_logprobs"]) == len(roll["top5_logprobs"])
        assert roll["reward"] == pytest.approx(rollout_reward(roll["token_logprobs"], roll["top5_logprobs"]), abs=1e-9)


def test_tree_check_recomputes_the_reward_the_file_names():
    from marco_eval.search.export import check_tree_document

    def length_reward(logprobs, top5):  # another reward: tree check cannot recompute it, only bound it
        return min(1.0, len(logprobs) / 100)

    pol = ScriptedPolicy(steps_script())
    s = make(pol, simulations=3, children=2)
    doc = json.loads(json.dumps(tree_document(s, drive(s, pol), 0, PROMPT)))
    assert doc["reward"] == "confidence" and check_tree_document(doc) == []
    doc["rollouts"][0]["reward"] += 0.1
    assert check_tree_document(doc)[0].startswith("rollout 0: reward")
    pol = ScriptedPolicy(steps_script())
    s = make(pol, simulations=3, children=2, reward=length_reward)
    doc = json.loads(json.dumps(tree_document(s, drive(s, pol), 0, PROMPT)))
    assert doc["reward"] == "length_reward" and check_tree_document(doc) == []
    doc["rollouts"][0]["reward"] = 1.5
    assert check_tree_document(doc) == ["rollout 0: reward 1.5 outside [0, 1]"]


def test_generated_token_count_is_the_cost():
    pol = ScriptedPolicy(steps_script())
    s = make(pol, simulations=3, children=2)
    r = drive(s, pol)
    assert r.generated_tokens == sum(len(g.token_ids) for g in pol.outputs) > 0
    assert r.policy_calls == len(pol.calls)


# ---------------------------------------------------------------- config validation
@pytest.mark.parametrize("kwargs,needle", [
    ({"simulations": 0}, "simulations"), ({"children": -1}, "children"), ({"mini_step_tokens": 0}, "mini_step_tokens"),
    ({"temperature": -0.1}, "temperature"), ({"top_p": 0}, "top_p"), ({"action": "sentence"}, "action"),
    ({"final_answer": "best"}, "final_answer"), ({"reflection": "always"}, "reflection"),
    ({"step_delimiters": []}, "step_delimiters"), ({"strategy": "beam"}, "strategy"),
])
def test_bad_search_config_is_rejected(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SearchConfig(**kwargs)


def test_continuous_driver_matches_lockstep():
    from fakes import StreamingScriptedPolicy

    prompts = ["Q1\n", "Q2 longer\n", "Q3\n", "Q4\n"]

    def searches(pol):
        return [Search(SearchConfig(simulations=3, children=2), pol.encode(p), pol, max_new_tokens=200,
                       until=("</Output>",), answer_fn=number_answer) for p in prompts]

    lock_pol = ScriptedPolicy(seed_dependent_script)
    lockstep = run_searches(searches(lock_pol), lock_pol, width=2)
    pol = StreamingScriptedPolicy(seed_dependent_script, capacity=3)
    done = []
    streamed = run_searches(searches(pol), pol, width=2, on_done=lambda i, r: done.append(i))
    assert [r.text for r in streamed] == [r.text for r in lockstep]
    assert [r.generated_tokens for r in streamed] == [r.generated_tokens for r in lockstep]
    assert sorted(done) == [0, 1, 2, 3] and pol.max_live == 3


# ---------------------------------------------------------------- per-rollout data, anytime trace, strategies passed in
def test_sampling_trace_is_the_rule_over_the_first_k_samples():
    answers = iter(["5", "6", "6", "7", "6"])
    pol = ScriptedPolicy(lambda p, s: f"<Output>{next(answers)}</Output>")
    s = make(pol, strategy="sampling", samples=5, final_answer="vote")
    r = drive(s, pol)
    assert [x.answer for x in r.rollouts] == ["5", "6", "6", "7", "6"]
    assert [x.simulation for x in r.rollouts] == [1, 2, 3, 4, 5]
    # Every sample is the same 4 tokens long here: the trace spends 4 more per sample.
    lengths = [x.tokens for x in r.rollouts]
    assert lengths == [len(pol.encode("<Output>5</Output>"))] * 5
    assert [t.tokens for t in r.trace] == [sum(lengths[:k]) for k in range(1, 6)]
    assert r.trace[-1].tokens == r.generated_tokens
    # The vote after one sample is that sample; after three, "6" (two of three) wins.
    assert r.trace[0].answer == "5" and r.trace[2].answer == "6" and r.trace[-1].answer == r.answer
    assert all(x.finish == "</Output>" and 0 < x.reward <= 1 for x in r.rollouts)


def test_mcts_trace_has_one_point_per_simulation_and_ends_at_the_answer():
    pol = ScriptedPolicy(steps_script(n_steps=3))
    s = make(pol, simulations=5, children=2)
    r = drive(s, pol)
    assert len(r.trace) == 5
    assert [t.tokens for t in r.trace] == sorted(t.tokens for t in r.trace)  # spending only grows
    assert r.trace[-1].tokens == r.generated_tokens and r.trace[-1].answer == r.answer == "7"
    assert len(r.rollouts) == len(s.tree.rollouts) and {x.simulation for x in r.rollouts} <= set(range(1, 6))
    for summary, rollout in zip(r.rollouts, s.tree.rollouts):
        path = s.tree.path_ids(s.tree.nodes[rollout.node])
        assert summary.tokens == len(path) - rollout.continuation_start + len(rollout.token_ids)


def test_a_reward_passed_in_replaces_the_confidence_reward():
    pol = ScriptedPolicy(steps_script(n_steps=2))
    s = Search(SearchConfig(simulations=2), pol.encode(PROMPT), pol, max_new_tokens=200, until=("</Output>",),
               answer_fn=number_answer, reward=lambda logprobs, top5: 0.25)
    r = drive(s, pol)
    assert {x.reward for x in r.rollouts} == {0.25}
    assert all(n.value == pytest.approx(0.25) for n in s.tree.nodes if n.visits)


def test_final_answer_names_are_the_rules_table():
    from marco_eval.search.config import FINAL_ANSWERS
    from marco_eval.search.final_answer import RULES, best_reward, rule_for

    assert FINAL_ANSWERS == tuple(RULES) == ("max_value", "most_visited", "vote", "best_reward")
    assert rule_for("max_value", "sampling") is best_reward  # a flat set of samples has no path
    assert rule_for("most_visited", "mcts") is RULES["most_visited"]
    with pytest.raises(ValueError, match="final_answer='majority'"):
        SearchConfig(final_answer="majority")


def test_a_longer_search_passes_through_the_shorter_ones_answer():
    """Request seeds come from one stream per problem: simulations 1..4 of an 8-simulation
    search are a 4-simulation search (model_configs/mcts_step_8sims.yaml relies on it)."""
    script = steps_script(n_steps=3)
    short = drive(make(ScriptedPolicy(script), simulations=4), ScriptedPolicy(script))
    long = drive(make(ScriptedPolicy(script), simulations=8), ScriptedPolicy(script))
    assert long.trace[:4] == short.trace and long.rollouts[:len(short.rollouts)] == short.rollouts


# ---------------------------------------------------------------------- a verifier as the reward
def _valued(base):
    """A scripted policy that is also a Verifier: 0.9 for a sequence answering 7, else 0.2."""
    class Valued(base):
        scored: list

        def value_many(self, sequences):
            self.scored = getattr(self, "scored", []) + [list(s) for s in sequences]
            return [0.9 if "<Output>7" in self.decode(s) else 0.2 for s in sequences]
    return Valued


@pytest.mark.parametrize("strategy", ["mcts", "sampling"])
def test_a_verifier_reward_values_every_rollout_in_both_schedules(strategy):
    from fakes import StreamingScriptedPolicy
    from marco_eval.search.export import check_tree_document
    from marco_eval.search.reward import VerifierReward

    def script(prefix, seed):  # MCTS steps stop at the blank line; a sample writes it all
        return ("Step 1.\n\n" if "Step " not in prefix else "") + f"<Output>{7 if seed % 3 else 5}</Output>"

    def one(policy_class):
        pol = _valued(policy_class)(script)
        cfg = dict(strategy=strategy, simulations=4, children=2, samples=6, temperature=0.7, final_answer="best_reward")
        searches = [make(pol, reward=VerifierReward("fake"), seed=s, **cfg) for s in range(3)]
        return pol, searches, run_searches(searches, pol, width=2)

    pol, searches, results = one(ScriptedPolicy)
    _, streamed, again = one(StreamingScriptedPolicy)
    assert [r.text for r in again] == [r.text for r in results]  # same trees on either schedule
    assert [[x.reward for x in r.rollouts] for r in again] == [[x.reward for x in r.rollouts] for r in results]
    for s, r in zip(searches, results):
        assert {x.reward for x in r.rollouts} <= {0.9, 0.2}
        assert [x.reward for x in r.rollouts] == [0.9 if x.answer == "7" else 0.2 for x in r.rollouts]
        # the confidence reward is kept beside it, from the tokens' log-probs
        assert [x.confidence for x in s.tree.rollouts] == [rollout_reward(x.logprobs, x.top5) for x in s.tree.rollouts]
        # what was backed up is the verifier's value: each rollout as often as its node was backed up
        backed = sum(x.reward for x in r.rollouts) if strategy == "sampling" else sum(
            n.rollout_visits * s.tree.rollouts[n.rollout].reward for n in s.tree.nodes if n.rollout is not None)
        assert s.tree.root.value_sum == pytest.approx(backed)
        assert r.answer == "7"  # best_reward: the verifier's pick
        doc = json.loads(json.dumps(tree_document(s, r, 0, PROMPT)))
        assert doc["reward"] == "verifier:fake" and check_tree_document(doc) == []
    # every rollout's whole sequence, prompt first, was valued once
    assert len(pol.scored) == sum(len(r.rollouts) for r in results)
    assert all(seq[:len(pol.encode(PROMPT))] == pol.encode(PROMPT) for seq in pol.scored)


def test_tree_check_recomputes_a_verifiers_values_from_the_file():
    from marco_eval.search.export import check_tree_document, rollout_sequences, verifier_of
    from marco_eval.search.reward import VerifierReward

    def script(prefix, seed):
        return ("Step 1.\n\n" if "Step " not in prefix else "") + f"<Output>{7 if seed % 3 else 5}</Output>"

    pol = _valued(ScriptedPolicy)(script)
    search = make(pol, reward=VerifierReward("ckpt/v1"), seed=1, strategy="mcts", simulations=4, children=2,
                  temperature=0.7, final_answer="best_reward")
    (result,) = run_searches([search], pol)
    doc = json.loads(json.dumps(tree_document(search, result, 0, PROMPT, dtype="float32")))
    assert verifier_of(doc) == "ckpt/v1" and verifier_of({"reward": "confidence"}) is None
    # the file alone gives back every sequence the verifier was asked to value, in rollout order
    assert rollout_sequences(doc) == pol.scored
    asked = []

    def values(seqs):
        asked.extend(seqs)
        return pol.value_many(seqs)
    assert check_tree_document(doc, values=values) == [] and len(asked) == len(doc["rollouts"])
    value = doc["rollouts"][1]["reward"]
    doc["rollouts"][1]["reward"] = round(value - 0.05, 6)  # 0.2 -> 0.15: 0.35 in log-odds
    assert check_tree_document(doc, values=values) == [
        f"rollout 1: reward {doc['rollouts'][1]['reward']} but recomputes to {value}"]
    assert check_tree_document(dict(doc, dtype="bfloat16"), values=values) == []  # within bf16's allowance
    doc["rollouts"][1]["reward"] = 0.9 if value < 0.5 else 0.2  # well beyond it
    assert len(check_tree_document(dict(doc, dtype="bfloat16"), values=values)) == 1
    doc["rollouts"][1]["reward"] = round(value - 0.05, 6)
    # the verifier's own precision sets the allowance, not the policy's; older files wrote
    # torch's names ("torch.float32") and no verifier_dtype
    assert len(check_tree_document(dict(doc, dtype="bfloat16", verifier_dtype="float32"), values=values)) == 1
    assert check_tree_document(dict(doc, dtype="float32", verifier_dtype="bfloat16"), values=values) == []
    assert len(check_tree_document(dict(doc, dtype="torch.float32", verifier_dtype=None), values=values)) == 1
    assert check_tree_document(doc) == []  # no verifier at hand: only the bounds are checked


def test_a_verifier_reward_without_a_verifier_is_a_clear_error():
    from marco_eval.search.reward import VerifierReward

    pol = ScriptedPolicy(steps_script())
    with pytest.raises(TypeError, match="has no verifier"):
        run_searches([make(pol, reward=VerifierReward("x"), simulations=2, children=2)], pol)
