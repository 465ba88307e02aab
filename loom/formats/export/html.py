"""HTML export: one self-contained page to explore a loom in any browser, offline.

The page shows the tree (collapsible, children drawn only when expanded, so 10k+ nodes stay
fast), the text of the selected path with every token shaded by its probability and a tooltip
with the model's top-k alternatives and entropy, persona colours, bookmarks and pruned marks,
and a replay timeline: a slider over the event log that shows the tree as it was after event k.

Safety: the loom's data (model text is untrusted) travels only as JSON inside
`<script type="application/json">`, with `<`, `>` and `&` written as `\\u003c`-style escapes so
no text can close the element, and the page's own script shows it with `textContent`, never
`innerHTML`, so model text cannot become markup. A strict Content-Security-Policy forbids every
fetch and runs only the script whose sha256 it names, so nothing else could run even if markup
got in.

The stylesheet and the script are package data (`assets/loom.css`, `assets/loom.js`), inlined
into every page (no network, no CDN). Keep the script ASCII: the hash is over its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path
from typing import Any

from loom.formats.export import html_data
from loom.store.model import LoomDocument
from loom.text import one_line

_BODY = """<header>
  <h1 id="title"></h1>
  <span class="stats" id="stats"></span>
  <span class="legend" id="legend"></span>
  <span class="scale" id="scale"></span>
</header>
<main>
  <section id="treebox" aria-label="tree">
    <div class="tools">
      <label><input type="checkbox" id="pruned" checked> show pruned</label>
      <button type="button" id="collapse">collapse all</button>
      <span>click &#9656; to expand &middot; arrows move</span>
    </div>
    <div id="tree" role="tree" tabindex="0"></div>
  </section>
  <section id="reading" aria-label="text">
    <p class="banner" id="banner" hidden></p>
    <p class="crumbs" id="crumbs"></p>
    <pre id="text"></pre>
    <div class="card" id="card"></div>
  </section>
</main>
<footer>
  <div class="tl" id="tlcontrols">
    <button type="button" id="play">&#9654; play</button>
    <input type="range" id="slider" min="0" max="0" value="0" aria-label="replay timeline">
    <button type="button" id="latest">latest</button>
    <span id="tlabel"></span>
  </div>
  <div class="note" id="tlnote"></div>
  <ol id="events"></ol>
</footer>
<div class="tip" id="tip" hidden></div>
"""


ASSETS = Path(__file__).with_name("assets")
STYLE = (ASSETS / "loom.css").read_text(encoding="utf-8")
SCRIPT = (ASSETS / "loom.js").read_text(encoding="utf-8")


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element: nothing in it can end the element or open a comment.

    `ensure_ascii` also escapes U+2028/U+2029 (line terminators to older JavaScript parsers).
    `<`, `>` and `&` only ever occur inside JSON strings, where the escapes mean the same.
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()


def content_security_policy(script: str) -> str:
    return (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src '{script_hash(script)}'; img-src 'none'; font-src 'none'; "
        "connect-src 'none'; base-uri 'none'; form-action 'none'"
    )


def write(doc: LoomDocument, current: int | None) -> str:
    data = html_data.build(doc, current)
    script = SCRIPT
    title = html.escape(one_line(doc.title) or "Untitled loom", quote=True)
    csp = html.escape(content_security_policy(script), quote=True)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title} \u2014 loom</title>\n"
        f"<style>{STYLE}</style>\n"
        "</head>\n<body>\n"
        f"{_BODY}"
        f'<script type="application/json" id="loom-data">{script_json(data)}</script>\n'
        f"<script>{script}</script>\n"
        "</body>\n</html>\n"
    )
