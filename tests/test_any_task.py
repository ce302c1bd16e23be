"""marco_mcts on any lm-eval task: repeats that sample, the task's generation_kwargs, lm-eval's
thinking conventions, the answer kind per task and the budget in lm-eval's results."""

import json

import pytest

from marco_eval.errors import ConfigError, InputError
from marco_eval.lm import repeat_instances
from tests.fakes import fake_lm

GEN = {"until": ["</Output>"], "max_gen_toks": 200}


class Req:
    """What lm-eval hands generate_until: args, the task and document, and `repeats`."""

    def __init__(self, doc_id: int, task_name: str = "gsm8k_cot", gen_kwargs=GEN, repeats: int = 1):
        self.args = (f"Question {doc_id}: what is {doc_id} plus {doc_id}?\n", dict(gen_kwargs))
        self.task_name, self.doc_id, self.repeats = task_name, doc_id, repeats


def by_seed(prefix: str, seed: int) -> str:
    """Another seed writes another step and answer, so identical copies show."""
    return f"Think {seed % 97}.\n\n<Output>{seed % 10}</Output>"


def repeated(docs: int, k: int, task: str = "gsm8k_cot") -> list[Req]:
    """As lm-eval's evaluator clones them: the same Instance k times in a row."""
    out = []
    for d in range(docs):
        out.extend([Req(d, task, repeats=k)] * k)
    return out


# ---------------------------------------------------------------- repeats
def test_copies_of_a_repeated_request_are_numbered_in_order():
    a, b = Req(0, repeats=3), Req(1, repeats=2)
    assert repeat_instances([a, a, a, b, b]) == [0, 1, 2, 0, 1]
    assert repeat_instances([Req(0), Req(0)]) == [0, 0]  # two Instances are two requests, not copies


def test_repeats_4_gives_4_independent_searches_per_document_and_the_same_bytes_again(tmp_path):
    kw = dict(config="self_consistency", samples=1, tree_dir=str(tmp_path / "trees"))
    texts = fake_lm(by_seed, **kw).generate_until(repeated(2, 4), True)
    for d in range(2):
        assert len(set(texts[4 * d: 4 * d + 4])) == 4, texts  # four searches, four samples
    assert fake_lm(by_seed, **kw).generate_until(repeated(2, 4), True) == texts
    trees = sorted((tmp_path / "trees").glob("gsm8k_cot_0_*.json"))
    assert [json.loads(t.read_text())["instance"] for t in trees] == [0, 1, 2, 3]


def test_the_first_copy_searches_as_an_unrepeated_request():
    one = fake_lm(by_seed, config="self_consistency", samples=1).generate_until([Req(0)], True)
    four = fake_lm(by_seed, config="self_consistency", samples=1).generate_until(repeated(1, 4), True)
    assert four[0] == one[0]


def test_the_store_keeps_repeats_apart_and_resumes_them(tmp_path):
    store = str(tmp_path / "s.jsonl")
    texts = fake_lm(by_seed, config="self_consistency", samples=1, store=store).generate_until(repeated(2, 3), True)
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len({r["key"] for r in records}) == 6 and sorted(r["instance"] for r in records) == [0, 0, 1, 1, 2, 2]
    again = fake_lm(by_seed, config="self_consistency", samples=1, store=store)
    assert again.generate_until(repeated(2, 3), True) == texts and again.stats == []  # all read back


def test_a_greedy_config_says_its_repeats_are_one_search(capsys):
    fake_lm(by_seed, config="base_cot").generate_until(repeated(2, 3), True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "temperature=0 makes every copy" in line]
    assert len(lines) == 1 and "gsm8k_cot repeats each request 3 times" in lines[0]


# ---------------------------------------------------------------- generation_kwargs
def test_task_sampling_kwargs_the_config_overrides_are_said_once_per_task(capsys):
    gen = {**GEN, "do_sample": True, "temperature": 0.2, "top_k": 40}
    reqs = [Req(d, task, gen) for task in ("gsm8k_cot", "mgsm_en") for d in range(3)]
    fake_lm(by_seed, config="base_cot").generate_until(reqs, True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "generation_kwargs" in line]
    assert len(lines) == 2 and all("the search config decides (temperature=0.0" in line for line in lines)
    assert "do_sample=True, temperature=0.2, top_k=40" in lines[0]


def test_task_kwargs_that_agree_with_the_config_are_not_warned_about(capsys):
    fake_lm(by_seed, config="base_cot").generate_until([Req(0, gen_kwargs={**GEN, "do_sample": False,
                                                                            "temperature": 0})], True)
    assert "generation_kwargs" not in capsys.readouterr().err


@pytest.mark.parametrize("budget, ok", [("512", True), (512, True), ("512.0", False), (2.5, False), ("abc", False),
                                        (0, False), (True, False)])
def test_a_budget_is_a_positive_integer_or_a_one_line_error(budget, ok):
    lm = fake_lm(by_seed)
    req = Req(0, gen_kwargs={"until": ["</Output>"], "max_gen_toks": budget})
    if ok:
        assert lm.generate_until([req], True)[0]
    else:
        with pytest.raises(InputError, match=r"gsm8k_cot doc 0: max_gen_toks=.* must be a positive integer"):
            lm.generate_until([req], True)


# ---------------------------------------------------------------- thinking
def thinker(prefix: str, seed: int) -> str:
    return "<think>\nFirst a</think> b.\n\nThen c.\n\n</think>\n\nThe sum is <Output>5</Output>"


def test_think_end_token_returns_what_follows_the_last_one():
    (text,) = fake_lm(thinker, think_end_token="</think>").generate_until([Req(0)], True)
    assert text == "The sum is <Output>5"


def test_a_trace_that_never_closes_is_returned_whole():
    never = lambda prefix, seed: "<think>\nstill thinking about <Output>4</Output>"  # noqa: E731
    (text,) = fake_lm(never, think_end_token="</think>").generate_until([Req(0)], True)
    assert text == "<think>\nstill thinking about <Output>4"


def test_under_thinking_the_task_stops_cut_the_response_not_the_thinking(tmp_path):
    gen = {"until": ["\n\n"], "max_gen_toks": 300}  # a few-shot delimiter, inside every trace
    plain = fake_lm(thinker).generate_until([Req(0, gen_kwargs=gen)], True)
    assert plain == ["<think>\nFirst a</think> b."]  # lm-eval's hf model without think_end_token cuts here too
    (text,) = fake_lm(thinker, think_end_token="</think>", tree_dir=str(tmp_path)).generate_until(
        [Req(0, gen_kwargs=gen)], True)
    assert text == "The sum is <Output>5</Output>"
    (tree,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert tree["until"] == [] and tree["answer"] == "5"  # the reader read the response


def test_a_step_is_not_cut_at_the_think_end(tmp_path):
    fake_lm(thinker, think_end_token="</think>", config="mcts_step", simulations=2,
            tree_dir=str(tmp_path)).generate_until([Req(0)], True)
    (tree,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    actions = [n["action_text"] for n in tree["nodes"][1:]]
    assert "<think>\nFirst a</think> b.\n\n" in actions, actions


def test_enable_thinking_and_chat_template_args_reach_the_chat_template():
    lm = fake_lm(by_seed, think_end_token="</think>", enable_thinking=False,
                 **{"chat_template_args.enable_thinking": True, "chat_template_args.custom": "x"})
    assert lm.engine.chat_template_kwargs() == {"enable_thinking": False, "custom": "x"}  # as lm-eval's hf: the flag wins
    assert fake_lm(by_seed).engine.chat_template_kwargs() == {}


@pytest.mark.parametrize("args, message", [
    (dict(answer="letters"), "answer='letters': use one of number, math, choice, output, none, auto"),
    (dict(enable_thinking=True), "enable_thinking=true needs think_end_token"),
    (dict(chat_template_args="enable_thinking"), "chat_template_args='enable_thinking': expected a mapping"),
    (dict(think_end_token=""), "think_end_token=: give the text"),
])
def test_bad_values_of_the_new_keys_are_one_line(args, message):
    with pytest.raises(ConfigError) as e:
        fake_lm(by_seed, **args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_enable_thinking_is_refused_on_loglikelihood_tasks_as_lm_eval_refuses_it():
    lm = fake_lm(by_seed, think_end_token="</think>", enable_thinking=True)
    with pytest.raises(ConfigError, match="enable_thinking=true applies to generative tasks only"):
        lm._loglikelihood_tokens([(("a", "b"), [1], [2])], True)


# ---------------------------------------------------------------- answer kinds per task
def test_auto_reads_each_task_with_its_kind_and_records_it(tmp_path, capsys):
    choice = lambda prefix, seed: "Thinking.\n\nThe answer is (B)</Output>"  # noqa: E731
    lm = fake_lm(choice, config="self_consistency", samples=2, tree_dir=str(tmp_path), store=str(tmp_path / "s.jsonl"))
    lm.generate_until([Req(0, "gpqa_main_cot_zeroshot"), Req(1, "gsm8k_cot"), Req(2, "lambada_openai")], True)
    trees = {json.loads(p.read_text())["answer_kind"]: json.loads(p.read_text()) for p in tmp_path.glob("*_*.json")}
    assert set(trees) == {"choice", "number", "none"}
    assert trees["choice"]["answer"] == "B" and trees["number"]["answer"] is None and trees["none"]["answer"] is None
    assert "answer=auto does not know how task 'lambada_openai' writes its answers" in capsys.readouterr().err


def test_an_explicit_kind_keeps_the_keys_stores_had():
    from marco_eval import store

    assert store.request_key("f", "ctx", GEN) == store.request_key("f", "ctx", GEN, instance=0, answer_kind=None)
    assert store.request_key("f", "ctx", GEN, instance=1) != store.request_key("f", "ctx", GEN)


# ---------------------------------------------------------------- the budget
def test_the_budget_counts_every_answer_per_task(tmp_path):
    store = str(tmp_path / "s.jsonl")
    lm = fake_lm(by_seed, config="self_consistency", samples=2, store=store)
    lm.generate_until(repeated(2, 2) + [Req(5, "mgsm_en")], True)
    info = lm.get_model_info()["marco_eval_budget"]
    gsm = info["tasks"]["gsm8k_cot"]
    assert gsm["problems"] == 2 and gsm["requests"] == 4 and gsm["policy_calls"] == 4  # one call makes both samples
    assert gsm["generated_tokens"] == sum(s["generated_tokens"] for s in lm.stats if s["request"] < 4) > 0
    assert gsm["generated_tokens_per_problem"] == gsm["generated_tokens"] / 2
    assert info["tasks"]["mgsm_en"]["problems"] == 1 and info["search_seconds"] > 0
    lm.store.close()
    again = fake_lm(by_seed, config="self_consistency", samples=2, store=store)
    again.generate_until(repeated(2, 2) + [Req(5, "mgsm_en")], True)  # every answer read back from the store
    resumed = again.budget()["tasks"]
    assert resumed["gsm8k_cot"]["generated_tokens"] == gsm["generated_tokens"]
    assert resumed["gsm8k_cot"]["requests_from_store"] == 4


def test_the_math_vote_check_script_reads_the_trees(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_math_votes", "scripts/check_math_votes.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    forms = [r"so $\boxed{\frac{1}{2}}$", "it is $0.5$", r"$\boxed{3}$", r"hence $\dfrac12$"]
    by_seed_form = lambda prefix, seed: f"Work.\n\n{forms[seed % 4]}</Output>"  # noqa: E731
    fake_lm(by_seed_form, config="self_consistency", samples=6, tree_dir=str(tmp_path)).generate_until(
        [Req(d, "math500", {"until": ["Problem:"], "max_gen_toks": 200}) for d in range(3)], True)
    assert check.main(str(tmp_path)) == 0
    assert "3 of 3 votes pick math-verify's heaviest answer group" in capsys.readouterr().out
    tree = next(tmp_path.glob("*.json"))
    doc = json.loads(tree.read_text())
    doc["answer_text"] = r"$\boxed{7}$"  # a vote the rollouts do not support
    tree.write_text(json.dumps(doc))
    assert check.main(str(tmp_path)) == 1
