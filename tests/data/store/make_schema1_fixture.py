"""Write `schema1_labelled.loom` and `schema1_labelled.loom.json` (kept in the repository).

Run ONCE, at commit 23b10df of loom (the last code that wrote .loom schema version 1, token texts
stored in every tokens row): `python tests/data/store/make_schema1_fixture.py`. The .loom file is
what an old loom left on a user's disk; the .json beside it is its loom-json version 1 export made
by that same code, the expected content after any migration. Re-running it with newer code would
write a newer schema, so it refuses to overwrite the files.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/: the support helpers
sys.path.insert(0, str(HERE.parent.parent.parent))  # the repository: loom itself

from support.store import WordTokenizer, model_tokens  # noqa: E402

from loom.formats import write_document  # noqa: E402
from loom.store.loom import Loom, NewNode  # noqa: E402
from loom.store.model import GenerationSettings, Persona, PersonaLabel  # noqa: E402

LOOM = HERE / "schema1_labelled.loom"
EXPORT = HERE / "schema1_labelled.loom.json"

GEN = GenerationSettings(
    model="gemma-3-270m-q4_k_m.gguf",
    model_sha256="ab" * 32,
    temperature=0.9,
    top_p=0.95,
    top_k=0,
    min_p=0.05,
    seed=11,
    max_tokens=8,
    batch_id="b1",
    batch_index=0,
    batch_size=2,
)


def main() -> int:
    human = WordTokenizer().tokenize(" Bob: Nor do I.")
    if LOOM.exists() or EXPORT.exists():
        print("the fixture exists; it is written once, by the old code", file=sys.stderr)
        return 1
    with Loom.create(LOOM, title="croissants", prompt="Alice: You hate croissants.") as lm:
        root = lm.root_id
        lm.set_personas(
            [Persona("luigi", "kind", "green", 0.6), Persona("waluigi", "mean", "red", 0.4)]
        )
        a, b = lm.add_children(
            root,
            [
                NewNode(" Luigi bows and smiles", tokens=model_tokens(" Luigi bows and smiles",
                        k=5, seed=1), generation=GEN),
                NewNode(" Waluigi sneers at them", tokens=model_tokens(" Waluigi sneers at them",
                        k=5, seed=2, entropy=False), generation=GEN),
            ],
        )  # fmt: skip
        c = lm.add_child(a, " and waves", author="model", tokens=model_tokens(" and waves", k=3))
        h = lm.add_child(
            c, " Bob: I love them!", author="human", tokens=None
        )  # human text, no tokenizer: partial tokens
        lm.add_child(
            root, " Bob: Nor do I.", author="human", tokens=human
        )  # human text tokenized on entry: ids and texts, no probabilities
        lm.set_persona(a, PersonaLabel("luigi", "model", {"luigi": 0.8, "waluigi": 0.2}))
        lm.set_persona(b, PersonaLabel("waluigi", "model", {"luigi": 0.1, "waluigi": 0.9}))
        lm.set_manual_persona(c, "luigi")
        lm.set_bookmark(a, True)
        lm.add_tag(b, "villain")
        lm.edit(b, " Waluigi sneers at everyone")  # undo history: edit, then undo and redo
        lm.undo()
        lm.redo()
        lm.prune(h)
        lm.undo()  # left undone: redoable
        lm.add_census(
            {
                "node": a,
                "seed": 7,
                "settings": {"rollouts": 2, "tokens": 3},
                "names": ["luigi", "waluigi"],
                "model": "toy",
                "model_sha256": "",
                "token_index": None,
                "outcomes": [
                    {
                        "forced": [],
                        "text": "",
                        "p": 1.0,
                        "rollouts": [
                            {"tokens": model_tokens(" and waves back", k=3, seed=10 + i),
                             "label": "luigi", "posterior": {"luigi": 0.9, "waluigi": 0.1},
                             "repetition": False, "collapse": False, "batch_seed": 1,
                             "batch_index": i}
                            for i in range(2)
                        ],
                    }
                ],
            }
        )  # fmt: skip
        lm.set_current(c)
        write_document(lm.to_document(), "loom-json", EXPORT, current=lm.current)
    print(f"wrote {LOOM} and {EXPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
