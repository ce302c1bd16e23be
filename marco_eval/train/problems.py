"""Problems with known answers for synthetic CoT: a seeded generator, or a user file.

The generator fills templates written for this project (shopping, rates, fractions,
percentages, multi-step) with random numbers, in English or Chinese, and computes the
answer while it writes the question. Every arithmetic step is recorded ("12 * 4 = 48"),
so a test can re-check each step and that every operand is in the question.

Problems must never come from an evaluation set: `drop_eval_overlap` removes any problem
whose text equals an MGSM question (read from MGSM_DATA_DIR when it is set).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from marco_eval.errors import InputError
from marco_eval.jsonl import read_json_rows, write_jsonl_atomic


@dataclass(frozen=True)
class Problem:
    id: str
    lang: str  # "en" or "zh"
    question: str
    answer: str  # canonical number, as marco_eval.answers.normalize_number writes it
    kind: str = "user"  # the template that made it, or "user"
    steps: tuple[str, ...] = field(default=(), compare=False)  # "a op b = c", in order


# ---------------------------------------------------------------------- template pieces
NAMES = {
    "en": ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farah", "Grace", "Hiro", "Isla", "Jonah",
           "Kai", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara"],
    "zh": ["小明", "小红", "小刚", "小丽", "小华", "小军", "小芳", "小亮", "王阿姨", "李叔叔", "张老师", "刘奶奶"],
}
# (English plural, Chinese noun, Chinese measure word)
THINGS = [("apples", "苹果", "个"), ("pencils", "铅笔", "支"), ("notebooks", "笔记本", "本"),
          ("stickers", "贴纸", "张"), ("marbles", "弹珠", "颗"), ("oranges", "橙子", "个"),
          ("cupcakes", "纸杯蛋糕", "个"), ("erasers", "橡皮", "块")]
# (English singular, Chinese noun, Chinese measure word)
GOODS = [("jacket", "夹克", "件"), ("backpack", "书包", "个"), ("desk lamp", "台灯", "盏"),
         ("pair of shoes", "鞋", "双"), ("board game", "桌游", "盒"), ("kettle", "水壶", "个")]
VEHICLES = [("bus", "公共汽车"), ("truck", "卡车"), ("car", "小汽车"), ("van", "面包车")]
GIFTS = [("a book", "一本书"), ("a scarf", "一条围巾"), ("a puzzle", "一副拼图"), ("a plant", "一盆花")]
CONSTANTS = {60, 100}  # minutes per hour, percent: the only numbers a step may use unsaid


def hours(n: int) -> str:
    return f"{n} hour" if n == 1 else f"{n} hours"


class Work:
    """Computes and records each arithmetic step, so answers are never typed by hand."""

    def __init__(self):
        self.steps: list[str] = []

    def __call__(self, a, op: str, b):
        value = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: Fraction(a, b)}[op]()
        if value != int(value):
            raise ArithmeticError(f"{a} {op} {b} is not a whole number")  # templates pick numbers so it is
        value = int(value)
        self.steps.append(f"{a} {op} {b} = {value}")
        return value


# Each template: (rng, work) -> (english, chinese, answer). Both texts state the same numbers.
def shopping_change(rng, w):
    (t1, z1, u1), (t2, z2, u2) = rng.sample(THINGS, 2)
    a, p1, b, p2 = rng.randint(2, 9), rng.randint(2, 12), rng.randint(2, 9), rng.randint(2, 12)
    total = w(w(a, "*", p1), "+", w(b, "*", p2))
    bill = next(x for x in (20, 50, 100, 200, 500) if x > total)
    change = w(bill, "-", total)
    en = (f"{{n}} buys {a} {t1} for ${p1} each and {b} {t2} for ${p2} each, and pays with a ${bill} bill. "
          f"How much change, in dollars, does {{n}} get back?")
    zh = f"{{n}}买了{a}{u1}{z1}，每{u1}{p1}元，又买了{b}{u2}{z2}，每{u2}{p2}元。{{n}}付了{bill}元，应找回多少元？"
    return en, zh, change


def two_speeds(rng, w):
    vehicle, vehicle_zh = rng.choice(VEHICLES)
    s1, h1, s2, h2 = rng.randrange(30, 95, 5), rng.randint(2, 6), rng.randrange(30, 95, 5), rng.randint(1, 5)
    distance = w(w(s1, "*", h1), "+", w(s2, "*", h2))
    en = (f"A {vehicle} drives at {s1} km per hour for {hours(h1)}, then at {s2} km per hour for {hours(h2)}. "
          f"How many kilometres does it drive in total?")
    zh = f"一辆{vehicle_zh}先以每小时{s1}千米的速度行驶了{h1}小时，又以每小时{s2}千米的速度行驶了{h2}小时。它一共行驶了多少千米？"
    return en, zh, distance


def packing_rate(rng, w):
    rate, per_day, days = rng.randint(6, 40), rng.randint(3, 9), rng.randint(2, 6)
    packed = w(w(rate, "*", per_day), "*", days)
    damaged = rng.randint(1, max(1, packed // 10))
    good = w(packed, "-", damaged)
    en = (f"{{n}} packs {rate} boxes every hour, works {per_day} hours a day, and works for {days} days. "
          f"{damaged} of the boxes turn out to be damaged. How many undamaged boxes did {{n}} pack?")
    zh = f"{{n}}每小时包装{rate}个箱子，每天工作{per_day}小时，一共工作了{days}天。其中有{damaged}个箱子损坏了。{{n}}包装的完好箱子有多少个？"
    return en, zh, good


def fraction_gifts(rng, w):
    things, thing_zh, unit = rng.choice(THINGS)
    k, j = rng.choice([2, 3, 4, 5]), rng.choice([2, 3, 4])
    have = k * j * rng.randint(2, 8)
    rest = w(have, "-", w(have, "/", k))
    left = w(rest, "-", w(rest, "/", j))
    en = (f"{{n}} has {have} {things}. {{n}} gives 1/{k} of them to a friend, then gives 1/{j} of the "
          f"remaining {things} to a cousin. How many {things} does {{n}} have left?")
    zh = f"{{n}}有{have}{unit}{thing_zh}，先把其中的1/{k}送给朋友，再把剩下的1/{j}送给表妹。{{n}}还剩多少{unit}{thing_zh}？"
    return en, zh, left


def discount(rng, w):
    good, good_zh, unit = rng.choice(GOODS)
    price, percent, count = 20 * rng.randint(1, 15), rng.choice([10, 15, 20, 25, 30, 40, 50]), rng.randint(2, 5)
    off = w(w(price, "*", percent), "/", 100)
    paid = w(w(price, "-", off), "*", count)
    en = (f"A {good} costs ${price}. During a sale every item is {percent}% off. {{n}} buys {count} of them. "
          f"How many dollars does {{n}} pay?")
    zh = f"一{unit}{good_zh}原价{price}元。促销时所有商品优惠{percent}%。{{n}}买了{count}{unit}{good_zh}，一共付了多少元？"
    return en, zh, paid


def savings_weeks(rng, w):
    gift, gift_zh = rng.choice(GIFTS)
    per_week, weeks, more = rng.randint(5, 30), rng.randint(3, 10), rng.randint(2, 8)
    spent = rng.randint(1, per_week * weeks // 2)
    saved = w(w(per_week, "*", weeks), "-", spent)
    goal = saved + per_week * more  # chosen so the answer is a whole number of weeks
    weeks_left = w(w(goal, "-", saved), "/", per_week)
    en = (f"{{n}} saves ${per_week} every week. After {weeks} weeks, {{n}} spends ${spent} on {gift}. "
          f"How many more weeks must {{n}} save to have ${goal}?")
    zh = f"{{n}}每周存{per_week}元。存了{weeks}周后，{{n}}花{spent}元买了{gift_zh}。要让存款达到{goal}元，{{n}}还要再存多少周？"
    return en, zh, weeks_left


def share_cookies(rng, w):
    trays, per_tray, friends = rng.randint(2, 6), rng.randint(6, 15), rng.randint(2, 8)
    baked = w(trays, "*", per_tray)
    each_target = max(1, (baked - 1) // friends - rng.randint(0, 2))
    kept = baked - friends * each_target
    shared = w(baked, "-", kept)
    each = w(shared, "/", friends)
    en = (f"{{n}} bakes {trays} trays of cookies with {per_tray} cookies on each tray. {{n}} keeps {kept} cookies "
          f"and shares the rest equally among {friends} friends. How many cookies does each friend get?")
    zh = f"{{n}}烤了{trays}盘饼干，每盘{per_tray}块。{{n}}自己留下{kept}块，其余的平均分给{friends}个朋友。每个朋友分到多少块？"
    return en, zh, each


def class_minutes(rng, w):
    h, minutes, classes = rng.randint(1, 3), rng.randrange(5, 60, 5), rng.randint(2, 6)
    each = w(w(h, "*", 60), "+", minutes)
    total = w(each, "*", classes)
    en = (f"Each of {{n}}'s piano lessons lasts {hours(h)} and {minutes} minutes. {{n}} has {classes} lessons "
          f"this month. How many minutes of lessons is that in total?")
    zh = f"{{n}}每节钢琴课上{h}小时{minutes}分钟，这个月一共上{classes}节课。这个月{{n}}一共上了多少分钟的钢琴课？"
    return en, zh, total


TEMPLATES = {f.__name__: f for f in (shopping_change, two_speeds, packing_rate, fraction_gifts, discount,
                                     savings_weeks, share_cookies, class_minutes)}


# ---------------------------------------------------------------------- generation
def normalized_text(question: str) -> str:
    """What counts as "the same question": case and whitespace ignored."""
    return " ".join(question.lower().split())


def problem_id(lang: str, kind: str, question: str) -> str:
    digest = hashlib.sha1(normalized_text(question).encode("utf-8")).hexdigest()[:12]
    return f"{lang}-{kind}-{digest}"


def generate(n: int, seed: int = 0, langs: tuple[str, ...] = ("en", "zh"),
             kinds: tuple[str, ...] | None = None) -> list[Problem]:
    """`n` distinct problems; problem i is in langs[i % len(langs)]. Same arguments, same list."""
    if n <= 0:
        raise InputError(f"n={n}: ask for at least one problem")
    bad = [x for x in langs if x not in NAMES] + [k for k in kinds or () if k not in TEMPLATES]
    if bad or not langs:
        raise InputError(f"unknown language or template {bad or langs}; languages: en, zh; templates: {', '.join(TEMPLATES)}")
    rng = random.Random(seed)
    kinds = tuple(kinds or TEMPLATES)
    problems: list[Problem] = []
    seen: set[str] = set()
    for _ in range(n * 50):  # duplicates are rare; the cap only stops a hopeless request
        if len(problems) == n:
            break
        lang, kind = langs[len(problems) % len(langs)], rng.choice(kinds)
        work = Work()
        en, zh, answer = TEMPLATES[kind](rng, work)
        question = (en if lang == "en" else zh).replace("{n}", rng.choice(NAMES[lang]))
        if normalized_text(question) in seen:
            continue
        seen.add(normalized_text(question))
        problems.append(Problem(problem_id(lang, kind, question), lang, question, str(answer), kind, tuple(work.steps)))
    if len(problems) < n:
        raise InputError(f"only {len(problems)} distinct problems from these templates; ask for fewer or add templates")
    return problems


# ---------------------------------------------------------------------- user files
_CJK = re.compile(r"[\u4e00-\u9fff]")


def read_problem_file(path: str | Path) -> list[Problem]:
    """A JSON list or JSON lines of {"question": str, "answer": number} (+ optional id, lang)."""
    from marco_eval.answers import normalize_number

    problems = []
    for i, row in enumerate(read_json_rows(path), 1):
        question, answer = row.get("question"), normalize_number(str(row.get("answer", "")))
        if not isinstance(question, str) or not question.strip() or answer is None:
            raise InputError(f"{path}: row {i} needs a non-empty \"question\" and a numeric \"answer\"")
        lang = row.get("lang") or ("zh" if _CJK.search(question) else "en")
        problems.append(Problem(str(row.get("id") or problem_id(lang, "user", question)), lang, question.strip(), answer))
    if len(set(p.id for p in problems)) != len(problems):
        raise InputError(f"{path}: problem ids repeat; give each row a unique \"id\" or drop the field")
    return problems


# ---------------------------------------------------------------------- evaluation overlap
def mgsm_module():
    """tasks/mgsm_utils.py, the one place that formats MGSM prompts and reads MGSM files."""
    import importlib.util
    import sys

    from marco_eval.paths import TASKS_DIR

    name = "marco_eval_tasks_mgsm_utils"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TASKS_DIR / "mgsm_utils.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def mgsm_questions() -> set[str] | None:
    """Normalised MGSM questions (en + zh) from MGSM_DATA_DIR, or None when it is not set."""
    folder = os.environ.get("MGSM_DATA_DIR")
    if not folder:
        return None
    read_tsv = mgsm_module()._read_tsv
    return {normalized_text(row["question"]) for lang in ("en", "zh")
            for row in read_tsv(Path(folder).expanduser() / f"mgsm_{lang}.tsv")}


def drop_eval_overlap(problems: list[Problem], eval_questions: set[str] | None) -> tuple[list[Problem], int]:
    """Problems whose text is not an evaluation question, and how many were dropped."""
    if not eval_questions:
        return list(problems), 0
    kept = [p for p in problems if normalized_text(p.question) not in eval_questions]
    return kept, len(problems) - len(kept)


def write_problems(problems: list[Problem], path: str | Path) -> None:
    write_jsonl_atomic(path, [asdict(p) for p in problems])
