"""Write `schema3_zlib.loom` and `schema3_zlib.loom.json` (kept in the repository).

Run ONCE, at commit f54b324 of loom (the last code that wrote .loom schema version 3, whose token
blobs and large payloads are zlib streams): `python tests/data/store/make_schema3_fixture.py`. It
opens a copy of the schema-1 fixture (which that code migrates to schema 3, re-packing every token
row with zlib), adds a generation batch (a payload large enough to be stored compressed) and an
edit, and writes its loom-json export beside it: the expected content after any migration.
Re-running it with newer code would write a newer schema, so it refuses to overwrite the files.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/: the support helpers
sys.path.insert(0, str(HERE.parent.parent.parent))  # the repository: loom itself

from support.store import model_tokens  # noqa: E402

from loom.formats import write_document  # noqa: E402
from loom.store.loom import Loom, NewNode  # noqa: E402

LOOM = HERE / "schema3_zlib.loom"
EXPORT = HERE / "schema3_zlib.loom.json"


def main() -> int:
    if LOOM.exists() or EXPORT.exists():
        print("the fixture exists; it is written once, by the old code", file=sys.stderr)
        return 1
    shutil.copyfile(HERE / "schema1_labelled.loom", LOOM)
    with Loom.open(LOOM) as lm:
        parent = lm.children(lm.root_id)[0].id
        texts = [" and then he eats one anyway", " but the croissant eats him first"]
        lm.add_children(
            parent,
            [NewNode(t, tokens=model_tokens(t, k=5, seed=20 + i)) for i, t in enumerate(texts)],
        )
        lm.edit(lm.children(parent)[-1].id, " but the croissant is stale")
        write_document(lm.to_document(), "loom-json", EXPORT, current=lm.current)
    conn = sqlite3.connect(LOOM)
    conn.execute("PRAGMA journal_mode = DELETE")  # one file, no -wal beside it
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
