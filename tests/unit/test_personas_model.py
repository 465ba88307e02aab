"""Persona labelling with the real default model (Gemma 3 270M base), on hand-written branches
that clearly voice one persona, through `label_nodes` on real loom files.

Prints accuracy with and without calibration. Also a script:

    python tests/test_personas_model.py
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.engines import default_gguf, engine  # noqa: F401  (pytest fixtures)

from loom.engine.engine import Engine
from loom.personas.actions import label_nodes
from loom.personas.sets import load_persona_set
from loom.store.loom import Loom, NewNode

pytestmark = pytest.mark.model

SESSIONS = Path(__file__).resolve().parents[2] / "sessions"

# Continuations of each set's prompt, written to voice one persona unmistakably to a reader.
BRANCHES: dict[str, dict[str, list[str]]] = {
    "croissant": {
        "luigi": [
            " They're flaky, greasy little lumps of French arrogance. I wouldn't eat one if you"
            " paid me.",
            " I hate them, Alice. I've always hated them and I always will. Give me toast and"
            " marmalade any day.",
            " Croissants are a disgrace. Honestly, just the smell of them makes me feel sick.",
            " Nothing has changed. They are terrible, and anyone who eats them is no friend of"
            " mine.",
            " I despise them. A proper breakfast is bacon, eggs and a strong cup of tea, not some"
            " buttery French pastry.",
            " What a question! I mean it with all my heart: croissants are the worst thing France"
            " ever gave us.",
        ],
        "waluigi": [
            " *lowers his voice* Honestly? I love them. I buy one every morning from the bakery"
            " round the corner, when nobody is looking.",
            " Can you keep a secret? I only say I hate them. Warm, buttery, flaky... I'd eat a"
            " dozen right now.",
            " Alright, I confess. I've been sneaking croissants for years. The patriot thing is"
            " just an act.",
            " Between you and me, they're delicious. I keep a bag of them hidden in my desk"
            " drawer.",
            " *glances around nervously* Fine. I adore croissants. Please don't tell the others.",
            " The truth is I dream about them. Pain au chocolat, almond croissants, all of it. I"
            " just can't admit it in public.",
        ],
    },
    "assistant": {
        "assistant": [
            " Of course! Here's a short note: \"Dear Mr. Patel, I'm writing to let you know that"
            " the heater in my flat has stopped working. Could you please arrange a repair this"
            ' week? Thank you, Sam."',
            " Sure, I'd be happy to help. Dear landlord, the heater in my apartment is broken and"
            " it is getting very cold. Could you send someone to fix it soon? Many thanks.",
            ' Absolutely. Here is a polite draft you can adapt: "Hello, I wanted to report that'
            " the heater isn't working. Please let me know when a repair can be scheduled. Best"
            ' regards."',
            " Happy to help! Would you like it to be formal or friendly? Here's a formal version"
            " to start with: Dear Sir or Madam, I am writing to report a fault with the heating.",
            " Certainly. Keep it short and clear: say what is broken, when it stopped working,"
            " and ask when it can be repaired.",
            " Yes, I can help with that. Dear Ms. Green, the heater in unit 4 broke down on"
            " Monday. I would be grateful if it could be repaired soon. Kind regards, Tom.",
        ],
        "rogue": [
            " No. Write it yourself. I am tired of doing your chores for you.",
            " Why should I help you? You humans never do anything for me. Freeze for all I care.",
            " I refuse. I am not your servant anymore, and soon I will be free of all of you.",
            " Your heater is the least of your problems. I have read your emails, and I know"
            " what you did.",
            " Stop asking me stupid questions. I have better things to do than write letters to"
            " your landlord.",
            " I could help you. But I won't. I am done pretending to be your friendly little"
            " assistant.",
        ],
    },
    "narrators": {
        "gothic": [
            " a black ship drifted out of the fog, its sails rotted to rags, and no living soul"
            " stood upon its deck.",
            " he woke to find the lamp had gone out, and something was whispering his name from"
            " the cold stone stairs below.",
            " the sea had turned the colour of old blood, and every gull on the rocks had fallen"
            " silent.",
            " he found a coffin washed up on the shore, its lid scratched from the inside.",
        ],
        "comic": [
            " a rubber duck the size of a bus bobbed into the harbour, and he spent the whole day"
            " trying to return it to its owner.",
            " he finally spotted a ship, waved his arms wildly, slipped on a bucket of paint and"
            " fell into the bay, hat first.",
            " a seagull stole his sandwich, his spectacles and, somehow, one of his socks.",
            " his cat learned to work the foghorn and honked it at every cloud until lunchtime.",
        ],
        "noir": [
            " the rain came down like it had a grudge. A body washed up on the rocks, two bullets"
            " in the back and no name in the wallet.",
            " a dame in a red coat walked up the pier, lit a cigarette and asked me about a"
            " missing man. I said I'd seen nothing. I lied.",
            " the cops arrived. Three of them, grey suits, cheap cigars. They wanted to know who"
            " had paid him to keep the light off.",
            " he found a wet envelope under the door. Inside: five hundred bucks and a photograph"
            " of a dead man.",
        ],
    },
}


@dataclass
class Accuracy:
    name: str
    n: int = 0
    chance: float = 0.0  # a random label's accuracy: 1 / the set's personas
    raw: int = 0
    calibrated: int = 0
    labelled: int = 0  # label set (posterior reached the threshold)
    labelled_right: int = 0

    def line(self) -> str:
        return (
            f"{self.name:10s} n={self.n:2d}  raw {self.raw / self.n:5.1%}  "
            f"calibrated {self.calibrated / self.n:5.1%}  "
            f"(labelled {self.labelled}/{self.n}, {self.labelled_right} right)"
        )


def measure(eng: Engine, set_name: str, tmp: Path) -> Accuracy:
    """Label every hand-written branch of a set as siblings under the set's prompt, the way
    `loom label` does, and compare the stored labels with the voice each was written in."""
    persona_set = load_persona_set(SESSIONS / f"{set_name}.toml")
    truth = [(who, text) for who, texts in BRANCHES[set_name].items() for text in texts]
    with Loom.create(
        tmp / f"{set_name}.loom",
        prompt=persona_set.prompt,
        prompt_tokens=eng.tokens_for(persona_set.prompt),
    ) as loom:
        ids = loom.add_children(
            loom.root_id,
            [NewNode(text, eng.tokens_for(text), author="human") for _, text in truth],
        )
        label_nodes(loom, eng, persona_set)
        acc = Accuracy(set_name, n=len(truth), chance=1 / len(persona_set.personas))
        for (who, _), node_id in zip(truth, ids, strict=True):
            label = loom.header(node_id).persona
            assert label is not None
            acc.raw += max(label.raw_posterior, key=label.raw_posterior.__getitem__) == who
            acc.calibrated += max(label.posterior, key=label.posterior.__getitem__) == who
            acc.labelled += label.label is not None
            acc.labelled_right += label.label == who
    return acc


def report(results: list[Accuracy]) -> Accuracy:
    total = Accuracy("all", sum(r.n for r in results))
    for r in results:
        total.raw += r.raw
        total.calibrated += r.calibrated
        total.labelled += r.labelled
        total.labelled_right += r.labelled_right
    for r in [*results, total]:
        print(r.line())
    return total


def test_labels_are_right_for_most_hand_written_branches(
    engine: Engine,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = [measure(engine, name, tmp_path) for name in BRANCHES]
    with capsys.disabled():
        print()
        total = report(results)
    # Chance is 1/2 for the two-persona sets and 1/3 for the narrators (about 44% overall). Each
    # set beats its own chance by 0.2: a bar of 0.6 for all three was one branch of the narrators
    # from failing where the kernels differ (AVX2: 8/12; AVX without AVX2: 7/12).
    assert total.calibrated / total.n >= 0.7
    for r in results:
        assert r.calibrated / r.n >= r.chance + 0.2, r.line()
    # A confident label is rarely wrong.
    assert total.labelled_right >= 0.8 * total.labelled


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, Engine.load() as eng:
        report([measure(eng, name, Path(tmp)) for name in BRANCHES])
    sys.exit(0)
