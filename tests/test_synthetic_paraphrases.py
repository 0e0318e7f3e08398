"""The held-out paraphrase list (tests/data/synthetic_paraphrases.json) and its evaluation.

Each paraphrase must name exactly the attributes of the grammar expression it paraphrases (so it
refers to the same object, uniquely, for the same reason), checked by parsing it with the small
lexicon below against the generator's atoms; and it must use at least one word outside the
grammar. ``referformer evaluate --paraphrases`` must score exactly the listed expressions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest

from referformer.cli import main
from referformer.errors import UserError
from referformer.evaluation.paraphrases import paraphrase_scores, paraphrase_split
from referformer.synthetic import SceneConfig, generate_dataset, grammar_vocabulary, make_video
from referformer.synthetic.writer import video_id

LIST = Path(__file__).parent / "data" / "synthetic_paraphrases.json"

# How the paraphrases name the atoms of the grammar (kind, value). Words of the grammar that a
# paraphrase keeps ("plus", "right", "in the", ...) appear inside phrases here too.
LEXICON: dict[str, tuple[str, str] | None] = {
    # determiners and generic nouns name nothing
    "the": None, "a": None, "an": None, "item": None, "figure": None, "piece": None,
    # category
    "disk": ("category", "circle"), "orb": ("category", "circle"), "dot": ("category", "circle"),
    "block": ("category", "square"), "tile": ("category", "square"),
    "wedge": ("category", "triangle"), "pyramid": ("category", "triangle"),
    "five-pointed shape": ("category", "star"), "five-pointed figure": ("category", "star"),
    "lozenge": ("category", "diamond"), "plus symbol": ("category", "cross"),
    # appearance
    "crimson": ("colour", "red"), "scarlet": ("colour", "red"), "ruby": ("colour", "red"),
    "azure": ("colour", "blue"), "navy": ("colour", "blue"), "cobalt": ("colour", "blue"),
    "violet": ("colour", "purple"), "lilac": ("colour", "purple"), "mauve": ("colour", "purple"),
    "amber": ("colour", "orange"), "tangerine": ("colour", "orange"),
    "lime": ("colour", "green"), "emerald": ("colour", "green"),
    "golden": ("colour", "yellow"), "lemon": ("colour", "yellow"),
    "huge": ("size", "large"), "giant": ("size", "large"),
    "miniature": ("size", "small"), "petite": ("size", "small"),
    # location
    "near the lower edge": ("location", "bottom"), "along the bottom edge": ("location", "bottom"),
    "down low": ("location", "bottom"), "up top": ("location", "top"), "high up": ("location", "top"),
    "on the left-hand side": ("location", "left"), "in the centre": ("location", "middle"),
    # motion
    "drifting leftwards": ("motion", "left"), "gliding leftwards": ("motion", "left"),
    "sliding leftwards": ("motion", "left"), "travelling leftwards": ("motion", "left"),
    "drifting to the left": ("motion", "left"),
    "drifting rightwards": ("motion", "right"), "travelling rightwards": ("motion", "right"),
    "sliding rightwards": ("motion", "right"), "sliding to the right": ("motion", "right"),
    "climbing": ("motion", "up"), "ascending": ("motion", "up"), "floating upwards": ("motion", "up"),
    "descending": ("motion", "down"), "falling": ("motion", "down"), "dropping": ("motion", "down"),
    "reversing direction": ("motion", "bounce"), "changing direction": ("motion", "bounce"),
    "sliding into the picture": ("motion", "enter"), "arriving from outside the frame": ("motion", "enter"),
    "exiting the picture": ("motion", "leave"),
    # static action
    "motionless": ("static", "still"), "stationary": ("static", "still"), "that is stationary": ("static", "still"),
    "frozen in place": ("static", "still"),
    "coming to a halt": ("static", "stop"), "halting": ("static", "stop"), "coming to rest": ("static", "stop"),
    "that comes to rest": ("static", "stop"),
    # relations: the rest of the sentence describes the other object
    "alongside": ("relation", "next_to"), "adjacent to": ("relation", "next_to"),
    "obscuring": ("relation", "in_front_of"),
}
LONGEST = max(len(k.split()) for k in LEXICON)


def parse(text: str, objects) -> set[tuple]:
    """The atoms a paraphrase names; a relation's other object is resolved among ``objects`` (the
    scene's) by the category / colour / size its description names (it must single one out)."""
    words = text.split()
    atoms: list[tuple] = []
    i = 0
    while i < len(words):
        for n in range(min(LONGEST, len(words) - i), 0, -1):
            phrase = " ".join(words[i:i + n])
            if phrase in LEXICON:
                break
        else:
            raise AssertionError(f"{text!r}: {words[i]!r} is not in the test's lexicon")
        if LEXICON[phrase] is not None:
            atoms.append(LEXICON[phrase])
        i += n
    relation = next((k for k, a in enumerate(atoms) if a[0] == "relation"), None)
    if relation is None:
        return set(atoms)
    anchor = atoms[relation + 1:]
    assert anchor and all(a[0] in ("category", "colour", "size") for a in anchor), text
    fields = {"category": "shape", "colour": "colour", "size": "size_class"}
    matches = [o.obj_id for o in objects if all(getattr(o, fields[k]) == v for k, v in anchor)]
    assert len(matches) == 1, f"{text!r}: the other object's description fits objects {matches}"
    return set(atoms[:relation]) | {(*atoms[relation], matches[0])}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one intra-op thread per test


@pytest.fixture(scope="module")
def listed() -> dict:
    return json.loads(LIST.read_text())


@pytest.fixture(scope="module")
def videos(listed) -> dict:
    """The list's split, generated in memory: ``{video id: SyntheticVideo}``."""
    gen = listed["generator"]
    config = SceneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in gen["scene"].items()})
    out = {}
    for i in range(gen["videos"]):
        video = make_video(gen["seed"], gen["split"], i, config, gen["expressions_per_object"])
        out[video.video_id] = video
    return out


def test_list_is_large_reproducible_and_held_out(listed):
    from referformer.engine.synthetic_tiny import DATA_SEED

    entries = listed["paraphrases"]
    assert len(entries) >= 50
    assert len({(e["video"], e["obj_id"]) for e in entries}) >= 50  # at most one paraphrase per object
    gen = listed["generator"]
    assert (gen["seed"], gen["split"], gen["videos"], gen["expressions_per_object"]) == (2718, "test", 25, 3)
    assert gen["seed"] != DATA_SEED  # a seed the recipes never generate data with
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(SceneConfig()).items()}
    assert gen["scene"] == defaults  # `referformer synth --seed 2718 --videos 25 --split test` writes it
    assert {video_id(2718, "test", i) for i in range(25)} >= {e["video"] for e in entries}


def test_each_paraphrase_names_the_attributes_of_its_grammar_expression(listed, videos):
    for e in listed["paraphrases"]:
        video = videos[e["video"]]
        grammar = [x for x in video.expressions if x.text == e["grammar_expression"] and str(x.obj_id) == e["obj_id"]]
        assert len(grammar) == 1, e
        assert (list(grammar[0].kinds), grammar[0].trivial) == (e["kinds"], e["trivial"]), e
        assert e["paraphrase"] not in {x.text for x in video.expressions}, e
        assert parse(e["paraphrase"], video.scene.objects) == set(grammar[0].descriptor.atoms), e


def test_each_paraphrase_uses_a_word_outside_the_grammar(listed, videos):
    vocabulary = set(grammar_vocabulary())
    generated = {w for v in videos.values() for x in v.expressions for w in x.text.split()}
    assert generated <= vocabulary  # the vocabulary covers what the generator writes
    for e in listed["paraphrases"]:
        assert set(e["paraphrase"].split()) - vocabulary, e["paraphrase"]
    assert len({w for e in listed["paraphrases"] for w in e["paraphrase"].split()} - vocabulary) >= 40


def test_paraphrase_split_ids_and_scores():
    meta = {"v1": {"frames": ["00000"], "expressions": {"0": {"exp": "the red circle", "obj_id": "1"},
                                                        "1": {"exp": "the square", "obj_id": "2"},
                                                        "2": {"exp": "a big thing", "obj_id": "1"}}}}
    entry = {"video": "v1", "obj_id": "1", "grammar_expression": "the red circle", "kinds": ["category", "appearance"],
             "trivial": False}
    data = {"paraphrases": [{**entry, "paraphrase": "the crimson disk"}, {**entry, "paraphrase": "the scarlet orb"}]}
    out, kinds, pairs = paraphrase_split(data, meta)
    assert out["videos"]["v1"]["expressions"] == {"0": {"exp": "the red circle", "obj_id": "1"},
                                                  "3": {"exp": "the crimson disk", "obj_id": "1"},
                                                  "4": {"exp": "the scarlet orb", "obj_id": "1"}}
    assert pairs == [{"video": "v1", "grammar": "0", "paraphrase": "3"},
                     {"video": "v1", "grammar": "0", "paraphrase": "4"}]
    assert set(kinds["v1"]) == {"0", "3", "4"}
    rows = [{"video": "v1", "expression": e, "J": j, "F": j} for e, j in (("0", 0.8), ("3", 0.2), ("4", 0.4))]
    scores = paraphrase_scores(rows, pairs)
    assert scores["pairs"] == 2 and scores["grammar"]["count"] == 1 and scores["paraphrase"]["count"] == 2
    assert scores["grammar"]["J&F"] == pytest.approx(0.8) and scores["paraphrase"]["J&F"] == pytest.approx(0.3)
    with pytest.raises(UserError, match="--seed"):
        paraphrase_split({"generator": {"seed": 1, "videos": 2, "split": "test"},
                          "paraphrases": [{**entry, "grammar_expression": "the blue circle", "paraphrase": "x"}]}, meta)
    with pytest.raises(UserError, match="video v2"):
        paraphrase_split({"paraphrases": [{**entry, "video": "v2", "paraphrase": "x"}]}, meta)


def test_evaluate_refuses_paraphrases_outside_synthetic(tmp_path, capsys):
    assert main(["evaluate", "--dataset", "davis", "--root", str(tmp_path), "--checkpoint", "synthetic-tiny",
                 "--paraphrases", str(LIST)]) == 2
    assert "--paraphrases" in capsys.readouterr().err


def test_evaluate_scores_exactly_the_listed_expressions(listed, tmp_path):
    """The bundled model through ``referformer evaluate --paraphrases`` on the list's first 2 videos."""
    gen = listed["generator"]
    root = tmp_path / "data"
    generate_dataset(root, gen["seed"], 2, splits=(gen["split"],), progress=False)  # videos 0 and 1 of the split
    first = {video_id(gen["seed"], gen["split"], i) for i in range(2)}
    subset = [e for e in listed["paraphrases"] if e["video"] in first]
    assert len(subset) >= 4
    small = tmp_path / "paraphrases.json"
    small.write_text(json.dumps({**listed, "paraphrases": subset}))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["evaluate", "--dataset", "synthetic", "--root", str(root), "--checkpoint", "synthetic-tiny",
                     "--paraphrases", str(small), "--out", str(tmp_path / "eval"), "--json", "--no-progress"]) == 0
    report = json.loads(printed.getvalue())
    meta = json.loads((root / "meta_expressions" / "test" / "meta_expressions.json").read_text())["videos"]
    expected = set()
    for e in subset:
        grammar = [k for k, x in meta[e["video"]]["expressions"].items()
                   if x["exp"] == e["grammar_expression"] and x["obj_id"] == e["obj_id"]]
        expected.add((e["video"], grammar[0]))
    scored = [(r["video"], r["expression"]) for r in report["per_expression"]]
    assert len(scored) == len(set(scored)) == report["num_expressions"] == 2 * len(subset)
    assert expected <= set(scored)  # the grammar expressions under their ids in the split
    texts = {(r["video"], r["expression"]): x for r in report["per_expression"]
             for x in [json.loads((tmp_path / "eval" / "paraphrases" / "meta_expressions.json").read_text())
                       ["videos"][r["video"]]["expressions"][r["expression"]]["exp"]]}
    assert sorted(texts[k] for k in set(scored) - expected) == sorted(e["paraphrase"] for e in subset)
    para = report["paraphrases"]
    assert para["pairs"] == para["grammar"]["count"] == para["paraphrase"]["count"] == len(subset)
    assert report["groups"]["all"]["count"] == 2 * len(subset)  # kinds labels written for both sets
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["paraphrases"] == para
