"""lm-eval samples files of invented systems, for the judge tests (sentences written for these tests)."""

import json
from pathlib import Path

TASK = "colloquial_zh_en"
STAMP = "2026-01-02T03-04-05.678901"
# (source, reference, a careful translation, a clumsy one)
SENTENCES = [
    ("这家店的奶茶太甜了，下次少放点糖。", "The milk tea here is too sweet; less sugar next time.",
     "This shop's milk tea is too sweet, use less sugar next time.", "This store milk tea too sweet, next time put less sugar."),
    ("别急，我马上就到。", "Don't rush, I'll be right there.",
     "Don't worry, I'll be there in a minute.", "Not hurry, I immediately arrive."),
    ("周末要不要一起去爬山？", "Want to go hiking together this weekend?",
     "Do you want to go hiking together this weekend?", "Weekend want or not together go climb mountain?"),
    ("他说话很直，你别往心里去。", "He's very blunt, don't take it to heart.",
     "He speaks bluntly, don't take it personally.", "He talk very straight, you don't go into heart."),
    ("手机没电了，借我充一下。", "My phone died, can I charge it at yours?",
     "My phone is dead, can I borrow a charger?", "Phone no electricity, lend me charge."),
    ("今天堵车堵得要命。", "The traffic today is terrible.",
     "The traffic jam today is killing me.", "Today traffic jam jam to death."),
]
CAREFUL = [s[2] for s in SENTENCES]
CLUMSY = [s[3] for s in SENTENCES]


def write_samples(root: Path, system: str, translations: list[str], doc_ids=None, filters=("none",),
                  task: str = TASK) -> Path:
    """One samples_<task>_<stamp>.jsonl under root/system/, shaped like lm-eval's --log_samples."""
    folder = Path(root) / system
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"samples_{task}_{STAMP}.jsonl"
    doc_ids = range(len(translations)) if doc_ids is None else doc_ids
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text in zip(doc_ids, translations):
            zh, en = SENTENCES[doc_id % len(SENTENCES)][:2]
            for name in filters:
                row = {"doc_id": doc_id, "doc": {"id": f"t{doc_id}", "category": "daily", "zh": zh, "en": en},
                       "target": en, "arguments": {"gen_args_0": {"arg_0": f"Translate: {zh}"}},
                       "resps": [[f"<Thought>...</Thought>\n<Output>{text}</Output>"]],
                       "filtered_resps": [text], "filter": name, "metrics": ["bleu"], "bleu": 0.0}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def make_font(path: Path, chars: str, family: str = "JudgeTestGlyphs") -> Path:
    """A TrueType font with a box glyph (each of another size) for each of `chars`, and an
    empty .notdef: for the browser test's controlled font set (fontTools, which matplotlib brings)."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def box(width: int, height: int):
        pen = TTGlyphPen(None)
        pen.moveTo((100, 0)), pen.lineTo((100, height)), pen.lineTo((width, height)), pen.lineTo((width, 0))
        pen.closePath()
        return pen.glyph()

    names = {c: f"uni{ord(c):04X}" for c in dict.fromkeys(chars)}
    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder([".notdef", *names.values()])
    fb.setupCharacterMap({ord(c): name for c, name in names.items()})
    glyphs = {".notdef": TTGlyphPen(None).glyph()}
    for i, name in enumerate(names.values()):
        glyphs[name] = box(300 + 37 * (i % 17), 400 + 29 * (i % 11))
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({name: (1000, 0) for name in [".notdef", *names.values()]})
    fb.setupHorizontalHeader(ascent=880, descent=-120)
    fb.setupNameTable({"familyName": family, "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=880, usWinAscent=880, usWinDescent=120)
    fb.setupPost()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fb.save(str(path))
    return Path(path)


def fontconfig_with(folder: Path, font_files: list[Path]) -> Path:
    """A fontconfig file that sees only `font_files` (copied into folder/fonts): the browser
    then has exactly these fonts, whatever this machine has installed."""
    import shutil

    fonts = Path(folder) / "fonts"
    fonts.mkdir(parents=True, exist_ok=True)
    for f in font_files:
        shutil.copy(f, fonts / Path(f).name)
    conf = Path(folder) / "fonts.conf"
    conf.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig><dir>{fonts}</dir>'
                    f'<cachedir>{Path(folder) / "cache"}</cachedir></fontconfig>\n', encoding="utf-8")
    return conf
