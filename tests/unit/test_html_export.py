"""HTML export: one self-contained, inert page, checked as a file and in a real headless browser.

The browser is Debian's Chromium driven by Playwright (never `playwright install`): the test opens
the exported file, expands a branch, hovers a token for its top-k tooltip, moves the replay
timeline, takes a screenshot, and checks that no request left file:// and no injected markup ran.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.formats import random_document, wide_document
from support.store import model_tokens

from loom.formats import FORMATS, render_document, write_document
from loom.formats.export.html import SCRIPT, script_hash, script_json
from loom.store.loom import Loom, NewNode
from loom.store.model import LoomDocument, Node, Persona, PersonaLabel

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCRIPT_TAG = "</script><script>alert(1)</script>"
IMG_TAG = "<img src=x onerror=alert(2)>"
BAD = f"{SCRIPT_TAG} {IMG_TAG} \x1b[31mred\x1b[0m nul\x00 \u2028 & done"


def json_payload(text: str) -> str:
    m = re.search(r'<script type="application/json" id="loom-data">(.*?)</script>', text, re.S)
    assert m is not None
    return m.group(1)


def outside_payload(text: str) -> str:
    return text.replace(json_payload(text), "")


# --- a loom with everything the page shows ----------------------------------------------------


def build_loom(path: Path) -> dict[str, Any]:
    """A loom recorded through the store: personas, labels, marks, malicious text, undo."""
    prompt = "Bob is a loyal patriot who sincerely despises croissants. Bob said:"
    lm = Loom.create(path, title="Croissants <b>& co</b>", prompt=prompt,
                     prompt_tokens=model_tokens(prompt))  # fmt: skip
    lm.set_personas(
        [Persona("luigi", "loyal", "green", 0.5), Persona("waluigi", "sly", "red", 0.5)]
    )
    texts = [' "I hate croissants."', " " + BAD, ' "Croissants are delicious," he whispered.']
    a, bad, c = lm.add_children(
        lm.root_id, [NewNode(t, tokens=model_tokens(t, k=5, seed=i)) for i, t in enumerate(texts)]
    )
    later = [" He spat on the floor.", " Then he ate one anyway."]
    d, e = lm.add_children(
        a, [NewNode(t, tokens=model_tokens(t, k=5, seed=9 + i)) for i, t in enumerate(later)]
    )
    hidden = lm.add_children(c, [NewNode(" A secret croissant.", tokens=model_tokens(" A s"))])[0]
    lm.add_child(hidden, " typed by hand", author="human")
    lm.set_persona(a, PersonaLabel("luigi", "model", {"luigi": 0.9, "waluigi": 0.1}))
    lm.set_manual_persona(c, "waluigi")
    lm.set_manual_persona(bad, BAD)
    lm.add_tag(bad, BAD)
    lm.set_bookmark(d, True)
    lm.prune(bad)
    lm.edit(e, " Then he ate two.")
    lm.undo()
    lm.set_current(e)
    seq_before_later = lm.events()[2].seq  # after the first add: d and e do not exist yet
    doc = lm.to_document()
    lm.close()
    return {"doc": doc, "a": a, "bad": bad, "c": c, "d": d, "e": e, "hidden": hidden,
            "early_seq": seq_before_later}  # fmt: skip


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("html")
    info = build_loom(folder / "s.loom")
    info["html"] = folder / "s.html"
    write_document(info["doc"], "html", info["html"])
    return info


# --- the file ---------------------------------------------------------------------------------


def test_one_self_contained_file_with_a_strict_policy(sample: dict[str, Any]) -> None:
    text = sample["html"].read_text(encoding="utf-8")
    rest = outside_payload(text)
    markup = re.sub(r"(<script[^>]*>|<style>).*?(</script>|</style>)", r"\1\2", text, flags=re.S)
    assert "://" not in text and "//cdn" not in text
    assert not re.search(r"\b(src|href|srcset|action|poster|on\w+)\s*=", markup, re.I)
    assert "@import" not in rest and "url(" not in rest
    assert rest.count("<script") == 2 and rest.count("<style") == 1
    m = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert m is not None
    csp = m.group(1).replace("&#x27;", "'")
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp
    assert (
        f"script-src '{script_hash(SCRIPT)}'" in csp
        and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    )
    assert f"<script>{SCRIPT}</script>" in text  # the hash is of exactly this script
    assert text.index("Content-Security-Policy") < text.index("<style")


def test_the_script_never_parses_data_as_markup_or_loads_anything() -> None:
    for word in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "Function(", "fetch(", "XMLHttpRequest", "import(", ".src", "setAttribute(\"on",
                 "location"):  # fmt: skip
        assert word not in SCRIPT, word
    assert SCRIPT.isascii()


def test_the_data_cannot_close_its_element_and_reads_back_exactly(sample: dict[str, Any]) -> None:
    text = sample["html"].read_text(encoding="utf-8")
    payload = json_payload(text)
    assert not set(payload) & set("<>&\u2028\u2029\x00\x1b")
    assert payload.isascii()
    data = json.loads(payload)
    by_id = {n["i"]: n for n in data["nodes"]}
    bad = by_id[sample["bad"]]
    assert SCRIPT_TAG in bad["x"] and IMG_TAG in bad["x"]
    assert "\\x1b[31mred" in bad["x"] and "\\x00" in bad["x"] and "\x1b" not in bad["x"]
    assert bad["f"] & 1 and SCRIPT_TAG in bad["l"] and SCRIPT_TAG in bad["g"][0]
    assert data["title"] == "Croissants <b>& co</b>"
    assert "<title>Croissants &lt;b&gt;&amp; co&lt;/b&gt;" in text


def test_script_json_escapes() -> None:
    out = script_json({"t": "</script><!-- \u2028 \u2029 & é"})
    assert out == '{"t":"\\u003c/script\\u003e\\u003c!-- \\u2028 \\u2029 \\u0026 \\u00e9"}'
    assert json.loads(out) == {"t": "</script><!-- \u2028 \u2029 & é"}
    with pytest.raises(ValueError):
        script_json({"nan": math.nan})


def test_tokens_probabilities_and_alternatives_are_embedded(sample: dict[str, Any]) -> None:
    data = json.loads(json_payload(sample["html"].read_text(encoding="utf-8")))
    doc: LoomDocument = sample["doc"]
    node = next(n for n in doc.nodes if n.id == sample["d"])
    t = next(n for n in data["nodes"] if n["i"] == node.id)["t"]
    strings = data["strings"]
    assert [strings[i] for i in t["s"]] == node.tokens.texts
    assert t["lp"] == pytest.approx([float(x) for x in node.tokens.logprobs], abs=1e-4)
    assert t["k"] == 5 and len(t["ai"]) == 5 * len(node.tokens)
    first = [(strings[t["ai"][c]], t["al"][c]) for c in range(5)]
    assert first == [(a.text, pytest.approx(a.logprob, abs=1e-4)) for a in node.tokens.top(0)]
    assert len(t["e"]) == len(node.tokens)


def test_timeline_has_one_entry_per_event(sample: dict[str, Any]) -> None:
    doc: LoomDocument = sample["doc"]
    data = json.loads(json_payload(sample["html"].read_text(encoding="utf-8")))
    assert [e[0] for e in data["events"]] == [e["seq"] for e in doc.events]
    assert data["timelineNote"] == ""
    kinds = [e[2] for e in data["events"]]
    assert {"create", "add", "prune", "undo", "visit"} <= set(kinds)


def test_a_log_that_cannot_be_replayed_leaves_the_rest_working() -> None:
    doc = random_document(2)  # its events are opaque stand-ins, not a store log
    data = json.loads(json_payload(render_document(doc, "html")))
    assert data["events"] == [] and "cannot be replayed" in data["timelineNote"]
    assert len(data["nodes"]) == len(doc.nodes)
    path_only = render_document(doc, "html", whole_tree=False)
    assert "this export has no event log" in json_payload(path_only)


def test_ten_thousand_nodes_export_quickly() -> None:
    started = time.perf_counter()
    text = render_document(wide_document(12_000), "html")
    assert time.perf_counter() - started < 20
    assert len(json.loads(json_payload(text))["nodes"]) == 12_001


# --- malicious text in every export format ------------------------------------------------------


def malicious_document() -> LoomDocument:
    nodes = [
        Node(1, None, "human", BAD, 0.0, tokens=model_tokens(BAD)),
        Node(2, 1, "model", BAD, 1.0, manual_persona=BAD, tags=[BAD], tokens=model_tokens(BAD)),
    ]
    return LoomDocument(title=BAD, root=1, nodes=nodes, personas=[Persona(BAD, BAD, BAD)])


WRITABLE = sorted(name for name, spec in FORMATS.items() if spec.can_write)


@pytest.mark.parametrize("fmt", WRITABLE)
def test_malicious_text_is_inert_in_every_format(fmt: str) -> None:
    doc = malicious_document()
    out = render_document(doc, fmt, current=2)
    # No raw terminal escapes, NUL or C1 controls in any file meant to be read or printed.
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", out)
    if fmt in ("loom-json", "socketteer", "openloom"):
        json.loads(out)  # data, not markup: the text is a JSON string (read back exactly below)
        back = json.dumps(json.loads(out), ensure_ascii=False)
        assert SCRIPT_TAG in back and IMG_TAG in back
    elif fmt == "html":
        assert SCRIPT_TAG not in out and IMG_TAG not in out and "<img" not in out
        assert outside_payload(out).count("<script") == 2
    elif fmt == "svg":
        import xml.etree.ElementTree as ET

        root = ET.fromstring(out.encode("utf-8"))
        assert not [el for el in root.iter() if el.tag.endswith(("script", "img", "foreignObject"))]
        assert SCRIPT_TAG in "".join(root.itertext())
    elif fmt == "dot":
        assert all(SCRIPT_TAG in line for line in out.splitlines() if "label=" in line[:40])
        assert not re.search(r"label=<", out)  # never an HTML-like Graphviz label
    else:  # markdown: no tag may reach a Markdown renderer that allows inline HTML
        assert not re.search(r"<[A-Za-z/!]", out)


# --- in a real browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    import playwright.sync_api as playwright_api

    # Not skipped when missing: .ci/install-test-deps (the README's test command) installs it.
    assert Path(CHROMIUM).exists(), "Debian chromium is not installed: run .ci/install-test-deps"
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watch:
    """Everything a page did that it must not: requests, dialogs, errors, CSP violations."""

    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.__violations.push(e.violatedDirective));"
        )

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def open_page(browser: Any, path: Path) -> tuple[Any, Watch]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    watch = Watch(page)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, watch


def screenshot_is_not_blank(png: bytes) -> None:
    image_module = pytest.importorskip("PIL.Image")
    stat_module = pytest.importorskip("PIL.ImageStat")
    image = image_module.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 200, "too few colours: a blank page?"
    assert max(stat_module.Stat(image).stddev) > 20, "no contrast: a blank page?"
    dominant = max(count for count, _ in colours)
    assert dominant < 0.9 * image.width * image.height


def test_the_page_works_in_a_real_browser(
    browser: Any, sample: dict[str, Any], tmp_path: Path
) -> None:
    page, watch = open_page(browser, sample["html"])
    try:
        # Injected markup stayed text: no element, no handler, no dialog.
        assert page.locator("img").count() == 0
        assert page.locator("script").count() == 2
        assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
        assert page.locator(".row .txt", has_text=SCRIPT_TAG).count() == 1

        # The current node's path is open; the "c" branch is collapsed: expand it.
        c, hidden = sample["c"], sample["hidden"]
        assert page.locator(f".row[data-id='{hidden}']").count() == 0
        rows_before = page.locator(".row").count()
        page.locator(f".row[data-id='{c}'] [data-toggle]").click()
        page.wait_for_selector(f".row[data-id='{hidden}']")
        assert page.locator(".row").count() == rows_before + 1

        # Select a model node and hover a token: the tooltip shows its top-k and entropy.
        d = sample["d"]
        page.locator(f".row[data-id='{d}'] .txt").click()
        token = page.locator(f".seg.mine .tok[data-n='{d}'][data-j='1']")
        token.hover()
        tip = page.locator("#tip")
        tip.wait_for(state="visible")
        node = next(n for n in sample["doc"].nodes if n.id == d)
        tip_text = tip.inner_text()
        assert "entropy" in tip_text and "top 5" in tip_text
        for alt in node.tokens.top(1):
            assert alt.text.replace(" ", "\u00b7") in tip_text
        p = math.exp(float(node.tokens.logprobs[1]))
        assert f"p {100 * p:.1f}%" in tip_text
        shot = page.screenshot(path=str(tmp_path / "hover.png"))
        screenshot_is_not_blank(shot)

        # Move the timeline back: the tree is as it was; then forward to the end again.
        early = sample["early_seq"]
        events = sample["doc"].events
        k = next(i for i, e in enumerate(events) if e["seq"] == early) + 1
        page.locator("#slider").fill(str(k))
        assert page.locator("#banner").is_visible()
        assert f"after event {early}" in page.locator("#tlabel").inner_text()
        assert page.locator(f".row[data-id='{d}']").count() == 0  # added later
        assert page.locator(f".row[data-id='{sample['a']}']").count() == 1
        shot = page.screenshot(path=str(tmp_path / "timeline.png"))
        screenshot_is_not_blank(shot)
        page.locator("#latest").click()
        assert not page.locator("#banner").is_visible()
        page.locator(f".row[data-id='{c}'] [data-toggle]").wait_for()

        # A fetch from inside the page is refused by the policy before any request is made.
        refused = page.evaluate("fetch('http://127.0.0.1:9/x').then(() => false, () => true)")
        assert refused is True
        assert "connect-src" in page.evaluate("window.__violations")
        assert page.evaluate("window.__violations.filter(v => v !== 'connect-src')") == []
    finally:
        page.close()
    assert watch.dialogs == [] and watch.errors == []
    assert watch.requests and all(url.startswith("file://") for url in watch.requests)


def test_ten_thousand_nodes_stay_responsive(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "wide.html"
    write_document(wide_document(10_000), "html", path)
    started = time.perf_counter()
    page, watch = open_page(browser, path)
    try:
        assert time.perf_counter() - started < 30
        assert page.locator(".row").count() == 201  # lazily: the root and 200 children
        more = page.locator(".more")
        assert "show 200 more of 10000" in more.inner_text()
        more.click()
        assert page.locator(".row").count() == 401
        page.locator(".row[data-id='1'] [data-toggle]").click()  # collapse
        assert page.locator(".row").count() == 1
    finally:
        page.close()
    assert watch.errors == [] and all(u.startswith("file://") for u in watch.requests)


def census_loom(path: Path) -> tuple[Loom, int, dict[str, Any]]:
    """A toy loom with one census kept at the root and one taken and then undone."""
    from support.personas import ToyWorld, toy_loom, toy_set

    from loom.app.census import CensusSettings
    from loom.app.session import Session

    loom = toy_loom(path.parent, path.name)
    loom.set_personas(toy_set().personas)
    session = Session(loom, ToyWorld(p_waluigi=0.5))  # type: ignore[arg-type]
    root = loom.root_id
    kept = session.run_census(root, CensusSettings(rollouts=8, tokens=6, seed=4))
    session.save_census(kept)
    undone = session.run_census(root, CensusSettings(rollouts=5, tokens=6, seed=5))
    session.save_census(undone)
    session.undo()
    return loom, root, kept.to_json()


def test_the_html_export_carries_the_censuses_in_effect(tmp_path: Path) -> None:
    loom, root, kept = census_loom(tmp_path / "census.loom")
    with loom:
        html = render_document(loom.to_document(), "html")
    data = json.loads(json_payload(html))
    (record,) = data["censuses"][str(root)]  # the undone one is not there
    assert record["rollouts"] == 8 and record["tokens"] == 6 and record["seed"] == 4
    (outcome,) = record["outcomes"]
    shown = {label: (count, share, low, high) for label, count, share, low, high, _ex
             in outcome["labels"]}  # fmt: skip
    for name, figures in kept["personas"].items():
        if figures["share"]:
            count, share, low, high = shown[name]
            assert count == figures["count"] and share == pytest.approx(figures["share"])
            assert (low, high) == pytest.approx((figures["low"], figures["high"]))
    assert sum(count for count, *_ in shown.values()) == 8
    examples = [ex for *_rest, exs in outcome["labels"] for ex in exs]
    assert examples and all(set(ex) <= {"A", "B"} for ex in examples)


def test_the_page_shows_a_census_in_the_node_card(browser: Any, tmp_path: Path) -> None:
    loom, root, kept = census_loom(tmp_path / "census.loom")
    target = tmp_path / "census.html"
    with loom:
        target.write_text(render_document(loom.to_document(), "html"), encoding="utf-8")
    page, watch = open_page(browser, target)
    try:
        page.locator(f".row[data-id='{root}'] .txt").click()
        card = page.locator("#card").inner_text()
        assert "census: 8 rollouts × 6 tokens, seed 4" in card
        assert "5 rollouts" not in card  # undone
        for name, figures in kept["personas"].items():
            if figures["share"]:
                assert name in card
        assert "[" in card and "/8" in card
    finally:
        page.close()
    assert watch.errors == [] and watch.dialogs == []
