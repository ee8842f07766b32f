"""The embedded parallel corpus: the offline ``tiny`` profile's data, generated from templates.

Every sentence is a template filled with slot fillers (subjects, activities, places, times,
cities) whose translations were written by hand for each language, so the six texts of a
sentence say the same thing. Templates are kept simple enough to stay grammatical:
third-person singular subjects, present tense, fixed noun phrases whose German case and gender
are spelled out whole in the filler (no agreement is computed).

Readings are what espeak-ng is given (see engine.science.languages): the text itself for the
Latin-script languages, tone-numbered pinyin for Mandarin, kana for Japanese (with the topic
particle は read わ and the direction particle へ read え, as spoken).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import product

import numpy as np

from engine.errors import UserError
from engine.science.languages import check_langs

CORPUS_LANGS: tuple[str, ...] = ("eng", "deu", "spa", "fra", "cmn", "jpn")
#: Sentences returned when ``n_per_lang`` is None.
DEFAULT_N = 600


@dataclass(frozen=True)
class Sentence:
    """One sentence in several languages: ``texts[lang]``, its espeak-ng ``readings[lang]`` and,
    where the data has one (FLEURS' ``transcription`` column), its ``normalized[lang]`` form."""

    sentence_id: str
    texts: dict[str, str] = field(hash=False)
    readings: dict[str, str] = field(hash=False)
    normalized: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def spoken(self) -> "Sentence":
        """The sentence as synthesised from its normalised forms (``definitions.synthesis_text``):
        texts, and the readings of languages espeak-ng reads as text, replaced where one exists."""
        texts = {lang: self.normalized.get(lang, text) for lang, text in self.texts.items()}
        readings = {lang: texts[lang] for lang in self.readings}
        return Sentence(self.sentence_id, texts, readings, self.normalized)


# Filler columns: eng, deu, spa, fra, cmn (Hanzi), cmn pinyin, jpn (kanji/kana), jpn kana.
SUBJECTS = [
    ("The teacher", "Der Lehrer", "El profesor", "Le professeur", "老师", "lao3 shi1", "先生", "せんせい"),
    ("My mother", "Meine Mutter", "Mi madre", "Ma mère", "我的妈妈", "wo3 de5 ma1 ma5", "私の母", "わたしの はは"),
    ("The child", "Das Kind", "El niño", "L'enfant", "孩子", "hai2 zi5", "子供", "こども"),
    ("The doctor", "Der Arzt", "El médico", "Le médecin", "医生", "yi1 sheng1", "医者", "いしゃ"),
    ("My brother", "Mein Bruder", "Mi hermano", "Mon frère", "我的哥哥", "wo3 de5 ge1 ge5", "私の兄", "わたしの あに"),
    ("Our neighbour", "Unser Nachbar", "Nuestro vecino", "Notre voisin", "我们的邻居", "wo3 men5 de5 lin2 ju1", "隣の人", "となりの ひと"),
    ("The student", "Der Student", "El estudiante", "L'étudiant", "学生", "xue2 sheng1", "学生", "がくせい"),
    ("My grandmother", "Meine Großmutter", "Mi abuela", "Ma grand-mère", "我的奶奶", "wo3 de5 nai3 nai5", "私の祖母", "わたしの そぼ"),
    ("The cook", "Der Koch", "El cocinero", "Le cuisinier", "厨师", "chu2 shi1", "料理人", "りょうりにん"),
    ("My friend", "Mein Freund", "Mi amigo", "Mon ami", "我的朋友", "wo3 de5 peng2 you5", "私の友達", "わたしの ともだち"),
]

# Activities: eng, (deu verb, deu object) split for verb-second order, spa, fra, cmn, pinyin, jpn, kana.
ACTIVITIES = [
    ("reads a book", ("liest", "ein Buch"), "lee un libro", "lit un livre", "看书", "kan4 shu1", "本を読みます", "ほんを よみます"),
    ("eats an apple", ("isst", "einen Apfel"), "come una manzana", "mange une pomme", "吃苹果", "chi1 ping2 guo3", "りんごを食べます", "りんごを たべます"),
    ("drinks coffee", ("trinkt", "Kaffee"), "bebe café", "boit du café", "喝咖啡", "he1 ka1 fei1", "コーヒーを飲みます", "こーひーを のみます"),
    ("writes a letter", ("schreibt", "einen Brief"), "escribe una carta", "écrit une lettre", "写信", "xie3 xin4", "手紙を書きます", "てがみを かきます"),
    ("buys bread", ("kauft", "Brot"), "compra pan", "achète du pain", "买面包", "mai3 mian4 bao1", "パンを買います", "ぱんを かいます"),
    ("cooks soup", ("kocht", "eine Suppe"), "cocina una sopa", "prépare une soupe", "做汤", "zuo4 tang1", "スープを作ります", "すーぷを つくります"),
    ("watches a film", ("sieht", "einen Film"), "ve una película", "regarde un film", "看电影", "kan4 dian4 ying3", "映画を見ます", "えいがを みます"),
    ("learns English", ("lernt", "Englisch"), "aprende inglés", "apprend l'anglais", "学英语", "xue2 ying1 yu3", "英語を勉強します", "えいごを べんきょうします"),
    ("drinks tea", ("trinkt", "Tee"), "bebe té", "boit du thé", "喝茶", "he1 cha2", "お茶を飲みます", "おちゃを のみます"),
    ("listens to music", ("hört", "Musik"), "escucha música", "écoute de la musique", "听音乐", "ting1 yin1 yue4", "音楽を聞きます", "おんがくを ききます"),
    ("buys flowers", ("kauft", "Blumen"), "compra flores", "achète des fleurs", "买花", "mai3 hua1", "花を買います", "はなを かいます"),
    ("reads the newspaper", ("liest", "die Zeitung"), "lee el periódico", "lit le journal", "看报纸", "kan4 bao4 zhi3", "新聞を読みます", "しんぶんを よみます"),
]

# Places: Mandarin carries its 在, Japanese its で.
PLACES = [
    ("at home", "zu Hause", "en casa", "à la maison", "在家", "zai4 jia1", "家で", "いえで"),
    ("in the park", "im Park", "en el parque", "dans le parc", "在公园", "zai4 gong1 yuan2", "公園で", "こうえんで"),
    ("at school", "in der Schule", "en la escuela", "à l'école", "在学校", "zai4 xue2 xiao4", "学校で", "がっこうで"),
    ("in the library", "in der Bibliothek", "en la biblioteca", "à la bibliothèque", "在图书馆", "zai4 tu2 shu1 guan3", "図書館で", "としょかんで"),
    ("at the station", "am Bahnhof", "en la estación", "à la gare", "在火车站", "zai4 huo3 che1 zhan4", "駅で", "えきで"),
    ("in the kitchen", "in der Küche", "en la cocina", "dans la cuisine", "在厨房", "zai4 chu2 fang2", "台所で", "だいどころで"),
    ("in the garden", "im Garten", "en el jardín", "dans le jardin", "在花园", "zai4 hua1 yuan2", "庭で", "にわで"),
    ("at the hotel", "im Hotel", "en el hotel", "à l'hôtel", "在酒店", "zai4 jiu3 dian4", "ホテルで", "ほてるで"),
]

TIMES = [
    ("today", "heute", "hoy", "aujourd'hui", "今天", "jin1 tian1", "今日", "きょう"),
    ("tomorrow", "morgen", "mañana", "demain", "明天", "ming2 tian1", "明日", "あした"),
    ("every day", "jeden Tag", "todos los días", "tous les jours", "每天", "mei3 tian1", "毎日", "まいにち"),
    ("this evening", "heute Abend", "esta noche", "ce soir", "今天晚上", "jin1 tian1 wan3 shang5", "今晩", "こんばん"),
    ("on Sunday", "am Sonntag", "el domingo", "dimanche", "星期天", "xing1 qi1 tian1", "日曜日に", "にちようびに"),
    ("in the morning", "morgens", "por la mañana", "le matin", "早上", "zao3 shang5", "朝", "あさ"),
]

CITIES = [
    ("Paris", "Paris", "París", "Paris", "巴黎", "ba1 li2", "パリ", "ぱり"),
    ("Berlin", "Berlin", "Berlín", "Berlin", "柏林", "bo2 lin2", "ベルリン", "べるりん"),
    ("Madrid", "Madrid", "Madrid", "Madrid", "马德里", "ma3 de2 li3", "マドリード", "まどりーど"),
    ("Tokyo", "Tokio", "Tokio", "Tokyo", "东京", "dong1 jing1", "東京", "とうきょう"),
    ("Beijing", "Peking", "Pekín", "Pékin", "北京", "bei3 jing1", "北京", "ぺきん"),
    ("London", "London", "Londres", "Londres", "伦敦", "lun2 dun1", "ロンドン", "ろんどん"),
    ("Rome", "Rom", "Roma", "Rome", "罗马", "luo2 ma3", "ローマ", "ろーま"),
    ("Vienna", "Wien", "Viena", "Vienne", "维也纳", "wei2 ye3 na4", "ウィーン", "うぃーん"),
]


def _activity_sentence(s, a, p, t) -> tuple[dict[str, str], dict[str, str]]:
    """'<subject> <activity> <place> <time>.' in every language."""
    deu_verb, deu_obj = a[1]
    texts = {
        "eng": f"{s[0]} {a[0]} {p[0]} {t[0]}.",
        "deu": f"{s[1]} {deu_verb} {t[1]} {deu_obj} {p[1]}.",
        "spa": f"{s[2]} {a[2]} {p[2]} {t[2]}.",
        "fra": f"{s[3]} {a[3]} {p[3]} {t[3]}.",
        "cmn": f"{s[4]}{t[4]}{p[4]}{a[4]}。",
        "jpn": f"{s[6]}は{t[6]}{p[6]}{a[6]}。",
    }
    readings = {
        "cmn": f"{s[5]} {t[5]} {p[5]} {a[5]}.",
        "jpn": f"{s[7]}わ {t[7]} {p[7]} {a[7]}。",
    }
    return texts, readings


def _travel_sentence(s, c, t) -> tuple[dict[str, str], dict[str, str]]:
    """'<subject> travels to <city> <time>.' in every language."""
    texts = {
        "eng": f"{s[0]} travels to {c[0]} {t[0]}.",
        "deu": f"{s[1]} reist {t[1]} nach {c[1]}.",
        "spa": f"{s[2]} viaja a {c[2]} {t[2]}.",
        "fra": f"{s[3]} voyage à {c[3]} {t[3]}.",
        "cmn": f"{s[4]}{t[4]}去{c[4]}。",
        "jpn": f"{s[6]}は{t[6]}{c[6]}へ行きます。",
    }
    readings = {
        "cmn": f"{s[5]} {t[5]} qu4 {c[5]}.",
        "jpn": f"{s[7]}わ {t[7]} {c[7]}え いきます。",
    }
    return texts, readings


def _make(sentence_id: str, texts: dict[str, str], cjk_readings: dict[str, str]) -> Sentence:
    readings = {lang: texts[lang] for lang in ("eng", "deu", "spa", "fra")}
    readings.update(cjk_readings)
    return Sentence(sentence_id, texts, readings)


def _template_pools() -> list[list[Sentence]]:
    """All sentences of each template, in a fixed enumeration order."""
    activity = [
        _make(f"emb-act-s{i:02d}-a{j:02d}-p{k:02d}-t{m:02d}", *_activity_sentence(s, a, p, t))
        for (i, s), (j, a), (k, p), (m, t) in product(
            enumerate(SUBJECTS), enumerate(ACTIVITIES), enumerate(PLACES), enumerate(TIMES))
    ]
    travel = [
        _make(f"emb-trv-s{i:02d}-c{j:02d}-t{m:02d}", *_travel_sentence(s, c, t))
        for (i, s), (j, c), (m, t) in product(enumerate(SUBJECTS), enumerate(CITIES), enumerate(TIMES))
    ]
    return [activity, travel]


def corpus_size() -> int:
    """Number of distinct sentences the templates can generate."""
    return sum(len(pool) for pool in _template_pools())


@lru_cache(maxsize=1)
def corpus_digest() -> str:
    """sha256 of every sentence the templates can generate (ids, texts, readings): part of the
    data stage's key, so an edited template or filler never reuses a cached selection."""
    import hashlib
    import json

    h = hashlib.sha256()
    for pool in _template_pools():
        for sent in pool:
            h.update(json.dumps([sent.sentence_id, sent.texts, sent.readings], ensure_ascii=False,
                                sort_keys=True).encode("utf-8"))
    return h.hexdigest()[:16]


def embedded_corpus(n_per_lang: int | None = None, seed: int = 0) -> list[Sentence]:
    """Deterministic parallel sentences in eng deu spa fra cmn jpn.

    Parameters
    ----------
    n_per_lang : number of sentences (each has a text in all six languages); None means
        ``DEFAULT_N`` (600). At most ``corpus_size()``.
    seed : chooses which template fillings are taken; same seed and n, same list.

    Returns
    -------
    list of Sentence, in selection order; ids are unique and stable across seeds (an id names
    its slot fillers), texts are unique per language. Templates are drawn in turn (round robin
    over each template's seeded permutation) so no template crowds out the others.
    """
    n = DEFAULT_N if n_per_lang is None else n_per_lang
    total = corpus_size()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= total:
        raise UserError(f"embedded corpus size n_per_lang={n_per_lang!r} is invalid: "
                        f"give an integer from 1 to {total}")
    rng = np.random.default_rng(seed)
    orders = [[pool[i] for i in rng.permutation(len(pool))] for pool in _template_pools()]
    chosen: list[Sentence] = []
    position = 0
    while len(chosen) < n:
        for order in orders:
            if position < len(order) and len(chosen) < n:
                chosen.append(order[position])
        position += 1
    return chosen


# ----------------------------------------------------------------------------- selections

#: Share of a selection held out for steering when ``n_steer`` is not given.
STEER_FRACTION = 0.2


@dataclass(frozen=True)
class Selection:
    """Parallel sentences chosen for one run, split into identification and held-out steering.

    ``sentences`` are in selection order; each has a text in every study language of ``langs``
    and in English (the X->En reference). ``identify_ids`` and ``steer_ids`` partition the ids.
    ``audio_files`` maps (sentence_id, lang) to the FLEURS recording "<split>/<file name>"
    (FLEURS selections only; used by the natural speech backend).
    """

    sentences: tuple[Sentence, ...]
    langs: tuple[str, ...]
    identify_ids: tuple[str, ...]
    steer_ids: tuple[str, ...]
    source: str                      # "embedded" | "fleurs"
    seed: int
    audio_files: dict = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict:
        """The ``selection.json`` artifact of the data stage; ``from_json`` reads it back."""
        return {"sentences": [{"sentence_id": s.sentence_id, "texts": s.texts, "readings": s.readings,
                               **({"normalized": s.normalized} if s.normalized else {})} for s in self.sentences],
                "langs": list(self.langs), "identify_ids": list(self.identify_ids), "steer_ids": list(self.steer_ids),
                "source": self.source, "seed": self.seed,
                "audio_files": [[sid, lang, f] for (sid, lang), f in sorted(self.audio_files.items())]}

    @classmethod
    def from_json(cls, d: dict) -> "Selection":
        return cls(sentences=tuple(Sentence(s["sentence_id"], s["texts"], s["readings"], s.get("normalized", {}))
                                   for s in d["sentences"]),
                   langs=tuple(d["langs"]), identify_ids=tuple(d["identify_ids"]),
                   steer_ids=tuple(d["steer_ids"]), source=d["source"], seed=d["seed"],
                   audio_files={(sid, lang): f for sid, lang, f in d["audio_files"]})

    def split_of(self, sentence_id: str) -> str:
        """"identify" or "steer"; KeyError for an id outside the selection."""
        if sentence_id in self._steer:
            return "steer"
        if sentence_id in self._identify:
            return "identify"
        raise KeyError(sentence_id)

    @cached_property
    def _steer(self) -> frozenset:
        return frozenset(self.steer_ids)

    @cached_property
    def _identify(self) -> frozenset:
        return frozenset(self.identify_ids)


def make_selection(sentences: list[Sentence], langs, *, source: str, seed: int,
                   n_steer: int | None = None, steer_fraction: float = STEER_FRACTION,
                   audio_files: dict | None = None) -> Selection:
    """Split already seeded-ordered ``sentences``: the last ``n_steer`` are held out for steering.

    ``n_steer`` defaults to ``max(1, round(steer_fraction * len(sentences)))``; it must leave at
    least one sentence on each side. Ids must be unique.
    """
    langs = check_langs(langs)
    if "eng" in langs:
        raise UserError("eng is the X->En target, not a study language: remove it from the language list")
    n = len(sentences)
    ids = [s.sentence_id for s in sentences]
    if len(set(ids)) != n:
        raise UserError("selection repeats a sentence id: deduplicate the sentences first")
    for s in sentences:
        for lang in ("eng",) + langs:
            if not s.texts.get(lang, "").strip():
                raise UserError(f"sentence {s.sentence_id} has no {lang} text: drop it or supply the text")
    if n_steer is None:
        if not 0.0 < steer_fraction < 1.0:
            raise UserError(f"steer_fraction={steer_fraction!r} is invalid: give a number strictly between 0 and 1")
        n_steer = max(1, round(steer_fraction * n))
    if isinstance(n_steer, bool) or not isinstance(n_steer, (int, np.integer)) or not 0 < n_steer < n:
        raise UserError(f"n_steer={n_steer!r} with {n} sentences is invalid: hold out from 1 to {n - 1} "
                        f"sentences (and select at least 2)")
    n_steer = int(n_steer)
    return Selection(tuple(sentences), langs, tuple(ids[: n - n_steer]), tuple(ids[n - n_steer:]),
                     source, seed, dict(audio_files or {}))


def select_embedded(langs=("deu", "spa", "fra", "cmn", "jpn"), n: int | None = None, seed: int = 0, *,
                    n_steer: int | None = None, steer_fraction: float = STEER_FRACTION) -> Selection:
    """Selection over the embedded corpus (the tiny profile's data); see ``embedded_corpus``."""
    return make_selection(embedded_corpus(n, seed), langs, source="embedded", seed=seed,
                          n_steer=n_steer, steer_fraction=steer_fraction)
