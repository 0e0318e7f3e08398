"""Referring expressions for synthetic scenes: the grammar, its kinds, and uniqueness.

A *descriptor* is a set of atoms (see :mod:`referformer.synthetic.facts`) that holds for its
referent and for no other object of the video. It is realised as text by the grammar

    expression := det [size] [colour] head [post [post]]
    head       := category noun | generic noun ("object", "shape", ...)
    post       := location | motion | static action | relation "the" [size] [colour] noun

with a few paraphrases per word or phrase. Every expression is labelled with the *kinds* it uses
(the RefVOS taxonomy): ``category`` (the category noun is the head), ``appearance`` (colour, size),
``location``, ``motion``, ``static_action`` and ``interaction`` (relations to another object).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from referformer.synthetic.facts import LOCATIONS, MOTION_VALUES, RELATIONS, STATIC_VALUES, SceneFacts
from referformer.synthetic.scenes import COLOURS, SHAPES, SIZE_CLASSES

KINDS: tuple[str, ...] = ("category", "appearance", "location", "motion", "static_action", "interaction")
"""Expression kinds, as written in ``expression_kinds.json``."""

ATOM_KIND = {
    "category": "category",
    "colour": "appearance",
    "size": "appearance",
    "location": "location",
    "motion": "motion",
    "static": "static_action",
    "relation": "interaction",
}

# ------------------------------------------------------------------------------------------------
# Words and phrases. No word other than "left" / "right" may contain "left" or "right": the
# training flip swaps those substrings (see DATASETS.md section 7).
# ------------------------------------------------------------------------------------------------
DETERMINERS = ("the", "the", "the", "a")  # "a" becomes "an" before a vowel
NOUNS = {
    "circle": ("circle", "circle", "disc", "ball"),
    "square": ("square", "square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "diamond": ("diamond", "diamond", "rhombus"),
    "cross": ("cross", "cross", "plus sign"),
}
GENERIC_NOUNS = ("object", "shape", "thing", "one")
SIZE_WORDS = {"small": ("small", "small", "little", "tiny"), "large": ("large", "big")}
COLOUR_WORDS = {c: (c,) for c in COLOURS}
LOCATION_PHRASES = {
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "middle": ("in the middle", "in the center"),
}
MOTION_PHRASES = {
    "left": ("moving left", "going left", "moving to the left", "that moves left", "heading left"),
    "right": ("moving right", "going right", "moving to the right", "that moves right", "heading right"),
    "up": ("moving up", "going up", "moving upwards", "that moves up", "rising"),
    "down": ("moving down", "going down", "moving downwards", "that moves down", "sinking"),
    "bounce": ("bouncing", "bouncing back", "that bounces back", "that turns around"),
    "enter": ("entering the frame", "coming into view", "that enters the scene", "appearing from the edge"),
    "leave": ("leaving the frame", "going out of view", "that leaves the scene", "disappearing at the edge"),
}
STATIC_PHRASES = {
    "still": ("standing still", "not moving", "that does not move", "staying in place"),
    "stop": ("that stops", "that stops moving", "that comes to a stop", "stopping"),
}
RELATION_PHRASES = {
    "next_to": ("next to", "beside", "close to", "near"),
    "passing": ("passing", "that passes", "moving past", "going past"),
    "behind": ("behind", "going behind", "hidden behind", "that goes behind"),
    "in_front_of": ("in front of", "that covers", "covering"),
}

# Relative selection weight of each kind (rare, informative kinds are preferred).
KIND_WEIGHTS = {"category": 1.0, "appearance": 1.0, "location": 1.5, "motion": 3.0,
                "static_action": 3.0, "interaction": 1.5}


def grammar_vocabulary() -> list[str]:
    """Every word the generator can emit, sorted (deterministic)."""
    words: set[str] = set(DETERMINERS) | set(GENERIC_NOUNS) | {"the", "an"}
    tables = [NOUNS, SIZE_WORDS, COLOUR_WORDS, LOCATION_PHRASES, MOTION_PHRASES, STATIC_PHRASES,
              RELATION_PHRASES]
    for table in tables:
        for phrases in table.values():
            for phrase in phrases:
                words.update(phrase.split())
    return sorted(words)


@dataclass(frozen=True)
class Descriptor:
    """A set of atoms describing one object; ``atoms`` are ``(kind, value[, anchor_id])``."""

    atoms: tuple[tuple, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The RefVOS kinds this descriptor uses, in :data:`KINDS` order."""
        used = {ATOM_KIND[a[0]] for a in self.atoms}
        return tuple(k for k in KINDS if k in used)

    def of(self, kind: str) -> list[tuple]:
        return [a for a in self.atoms if a[0] == kind]


@dataclass(frozen=True)
class Expression:
    """A unique referring expression of one video."""

    text: str
    obj_id: int
    descriptor: Descriptor
    trivial: bool  # the referent is the only object of its category in the video

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.descriptor.kinds


def is_unique(facts: SceneFacts, atoms, referent: int) -> bool:
    """True if ``atoms`` clearly hold for ``referent`` and clearly fail for every other object."""
    if facts.evaluate_all(atoms, referent) is not True:
        return False
    return all(facts.evaluate_all(atoms, o) is False for o in facts.object_ids if o != referent)


def anchor_atoms(facts: SceneFacts, obj_id: int) -> tuple[tuple, ...] | None:
    """The shortest appearance + category description that singles out ``obj_id`` (or None)."""
    obj = facts.tracks[obj_id].obj
    for extra in ((), (("colour", obj.colour),), (("size", obj.size_class),),
                  (("size", obj.size_class), ("colour", obj.colour))):
        atoms = (("category", obj.shape),) + extra
        if is_unique(facts, atoms, obj_id):
            return atoms
    return None


def candidate_descriptors(facts: SceneFacts, obj_id: int) -> list[Descriptor]:
    """All unique descriptors of ``obj_id`` with at most two post-modifiers."""
    obj = facts.tracks[obj_id].obj
    posts: list[tuple] = []
    for value in LOCATIONS:
        if facts.evaluate(("location", value), obj_id) is True:
            posts.append(("location", value))
    for value in MOTION_VALUES:
        if facts.evaluate(("motion", value), obj_id) is True:
            posts.append(("motion", value))
    for value in STATIC_VALUES:
        if facts.evaluate(("static", value), obj_id) is True:
            posts.append(("static", value))
    for other in facts.object_ids:
        if other == obj_id or anchor_atoms(facts, other) is None:
            continue
        for value in RELATIONS:
            if facts.evaluate(("relation", value, other), obj_id) is True:
                posts.append(("relation", value, other))
    pre_sets = [(), (("colour", obj.colour),), (("size", obj.size_class),),
                (("size", obj.size_class), ("colour", obj.colour))]
    post_sets: list[tuple] = [()] + [(p,) for p in posts]
    post_sets += [pair for pair in itertools.combinations(posts, 2) if pair[0][0] != pair[1][0]]
    out = []
    for head in ((("category", obj.shape),), ()):
        for pre in pre_sets:
            for post in post_sets:
                atoms = head + pre + post
                if atoms and is_unique(facts, atoms, obj_id):
                    out.append(Descriptor(atoms))
    return out


def is_minimal(facts: SceneFacts, descriptor: Descriptor, referent: int) -> bool:
    """True if dropping any non-category atom breaks uniqueness."""
    atoms = descriptor.atoms
    for i, atom in enumerate(atoms):
        if atom[0] == "category":
            continue
        rest = atoms[:i] + atoms[i + 1 :]
        if rest and is_unique(facts, rest, referent):
            return False
    return True


def choose_descriptors(rng: np.random.Generator, facts: SceneFacts, obj_id: int, count: int) -> list[Descriptor]:
    """Pick up to ``count`` unique descriptors of ``obj_id`` with different kind sets, preferring
    rare kinds (motion, static action, interaction) and minimal descriptions."""
    candidates = candidate_descriptors(facts, obj_id)
    groups: dict[tuple[str, ...], list[Descriptor]] = {}
    for d in candidates:
        groups.setdefault(d.kinds, []).append(d)
    keys = list(groups)
    weights = []
    for key in keys:
        informative = [k for k in key if k != "category"] or ["category"]
        w = max(KIND_WEIGHTS[k] for k in informative) * 0.4 ** (len(informative) - 1)
        if any(is_minimal(facts, d, obj_id) for d in groups[key]):
            w *= 3.0
        if key == ("motion",):
            w *= 2.0  # motion-only expressions need motion to be resolved
        weights.append(w)
    chosen: list[Descriptor] = []
    while keys and len(chosen) < count:
        p = np.array(weights) / sum(weights)
        i = int(rng.choice(len(keys), p=p))
        group = groups[keys.pop(i)]
        weights.pop(i)
        minimal = [d for d in group if is_minimal(facts, d, obj_id)] or group
        shortest = min(len(d.atoms) for d in minimal)
        pool = [d for d in minimal if len(d.atoms) == shortest]
        chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def realise(rng: np.random.Generator, facts: SceneFacts, descriptor: Descriptor) -> str:
    """The text of ``descriptor``, with paraphrases drawn from ``rng``."""
    words = [_pick(rng, DETERMINERS)]
    for atom in descriptor.of("size"):
        words.append(_pick(rng, SIZE_WORDS[atom[1]]))
    for atom in descriptor.of("colour"):
        words.append(_pick(rng, COLOUR_WORDS[atom[1]]))
    category = descriptor.of("category")
    generic = GENERIC_NOUNS if words[0] == "the" else GENERIC_NOUNS[:-1]  # no "a one"
    words.append(_pick(rng, NOUNS[category[0][1]]) if category else _pick(rng, generic))
    for atom in descriptor.of("location"):
        words.append(_pick(rng, LOCATION_PHRASES[atom[1]]))
    for atom in descriptor.of("motion"):
        words.append(_pick(rng, MOTION_PHRASES[atom[1]]))
    for atom in descriptor.of("static"):
        words.append(_pick(rng, STATIC_PHRASES[atom[1]]))
    for atom in descriptor.of("relation"):
        anchor = Descriptor(anchor_atoms(facts, atom[2]) or ())
        anchor_text = realise(rng, facts, anchor).split(" ", 1)[1]  # drop the determiner
        words.append(f"{_pick(rng, RELATION_PHRASES[atom[1]])} the {anchor_text}")
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def describe_scene(rng: np.random.Generator, facts: SceneFacts, per_object: int) -> list[Expression]:
    """Up to ``per_object`` unique expressions for every object, in object-id order."""
    shapes = [facts.tracks[o].obj.shape for o in facts.object_ids]
    out: list[Expression] = []
    for obj_id in facts.object_ids:
        trivial = shapes.count(facts.tracks[obj_id].obj.shape) == 1
        texts: set[str] = set()
        for descriptor in choose_descriptors(rng, facts, obj_id, per_object):
            text = realise(rng, facts, descriptor)
            if text in texts:
                continue
            texts.add(text)
            out.append(Expression(text, obj_id, descriptor, trivial))
    return out


__all__ = [
    "KINDS",
    "Descriptor",
    "Expression",
    "SHAPES",
    "SIZE_CLASSES",
    "anchor_atoms",
    "candidate_descriptors",
    "choose_descriptors",
    "describe_scene",
    "grammar_vocabulary",
    "is_unique",
    "realise",
]
