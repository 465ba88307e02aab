
(function () {
"use strict";
const D = JSON.parse(document.getElementById("loom-data").textContent);
const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
const STR = D.strings;
const EVENTS = D.events;
const CHUNK = 200;          // children shown per click: wide nodes stay fast
const TOKEN_BUDGET = 6000;  // tokens drawn as spans along a path; older text is plain
const PREVIEW = 90;
const MAX_INDENT = 16;      // deeper levels show their depth instead of more indent

// ---- the final tree ------------------------------------------------------------------------
const byId = new Map();
const kidsOf = new Map();
for (const n of D.nodes) {
  byId.set(n.i, n);
  if (n.p !== null) {
    let a = kidsOf.get(n.p);
    if (!a) { a = []; kidsOf.set(n.p, a); }
    a.push(n.i);
  }
}
const FINAL = { get: (id) => byId.get(id), kids: (id) => kidsOf.get(id) || [],
  root: () => D.root, current: () => D.current };

// ---- colours -------------------------------------------------------------------------------
const colours = new Map();
D.personas.forEach((p) => colours.set(p.name, p.color));
function colourOf(label) {
  if (label === null || label === undefined) return D.unlabelled;
  let c = colours.get(label);
  if (!c) {
    // a label outside the persona set: the first palette colour nobody uses yet
    const used = new Set(colours.values());
    c = D.palette.find((x) => !used.has(x)) || D.palette[colours.size % D.palette.length];
    colours.set(label, c);
  }
  return c;
}
function probColour(p) {
  const a = (0.1 + 0.5 * (1 - p)).toFixed(3);
  return "hsla(" + Math.round(120 * p) + ", 85%, 52%, " + a + ")";
}
function pct(p) { return (100 * p).toFixed(p >= 0.995 || p < 0.001 ? 2 : 1) + "%"; }
function shown(s) {
  return s.replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}
function preview(s) {
  const flat = s.replace(/\s+/g, " ").trim();
  return flat.length > PREVIEW ? flat.slice(0, PREVIEW - 1) + "\u2026" : (flat || "(empty)");
}
function stamp(ts) {
  const d = new Date(ts * 1000);
  const two = (x) => String(x).padStart(2, "0");
  return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " +
    two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
}

// ---- the replay: the tree after the first k events, moved by applying/reverting deltas ------
const R = { k: EVENTS.length, states: new Map(), undo: [], current: null, cache: null };
function stateOf(id, s) {
  return { i: id, p: s[0], pos: s[1], a: s[2], x: s[3], f: s[4], l: s[5], g: s[6] };
}
function applyTo(k) {
  while (R.k < k) {
    const ev = EVENTS[R.k];
    const prev = [];
    for (const [id, s] of ev[5]) {
      prev.push([id, R.states.get(id)]);
      if (s === null) R.states.delete(id); else R.states.set(id, stateOf(id, s));
    }
    R.undo[R.k] = [prev, R.current];
    R.current = ev[6];
    R.k++;
  }
  while (R.k > k) {
    R.k--;
    const [prev, cur] = R.undo[R.k];
    for (let j = prev.length - 1; j >= 0; j--) {
      const [id, s] = prev[j];
      if (s === undefined) R.states.delete(id); else R.states.set(id, s);
    }
    R.current = cur;
  }
  R.cache = null;
}
function replayIndex() {
  if (!R.cache) {
    const m = new Map();
    let root = null;
    for (const s of R.states.values()) {
      if (s.p === null) { root = s.i; continue; }
      let a = m.get(s.p);
      if (!a) { a = []; m.set(s.p, a); }
      a.push(s);
    }
    const ids = new Map();
    for (const [p, a] of m) {
      a.sort((x, y) => x.pos - y.pos || x.i - y.i);
      ids.set(p, a.map((s) => s.i));
    }
    R.cache = { kids: ids, root: root };
  }
  return R.cache;
}
const REPLAY = { get: (id) => R.states.get(id), kids: (id) => replayIndex().kids.get(id) || [],
  root: () => replayIndex().root, current: () => R.current };
// Start from the end: the deltas are applied once from the start so reverting works.
if (EVENTS.length) { R.k = 0; applyTo(EVENTS.length); }

let src = FINAL;
let selected = D.current;
let showPruned = true;
const expanded = new Set();
const chunks = new Map();
let changed = new Set();

function visibleKids(id) {
  const ks = src.kids(id);
  return showPruned ? ks : ks.filter((c) => { const n = src.get(c); return n && !(n.f & 1); });
}
function expandPathTo(id) {
  let n = src.get(id);
  const seen = new Set();
  while (n && n.p !== null && !seen.has(n.i)) {
    seen.add(n.i);
    expanded.add(n.p);
    n = src.get(n.p);
  }
}

// ---- the tree pane: one flat list of rows, children drawn only when expanded ---------------
function row(n, depth) {
  const r = el("div", "row");
  r.dataset.id = n.i;
  r.setAttribute("role", "treeitem");
  r.style.paddingLeft = (6 + Math.min(depth, MAX_INDENT) * 14) + "px";
  const nk = visibleKids(n.i).length;
  const tog = el("span", "tog", nk ? (expanded.has(n.i) ? "\u25be" : "\u25b8") : "\u00b7");
  if (nk) { tog.dataset.toggle = n.i; r.setAttribute("aria-expanded", String(expanded.has(n.i))); }
  r.append(tog);
  if (depth > MAX_INDENT) r.append(el("span", "badge", "\u2937" + depth));
  const dot = el("span", "dot");
  dot.style.background = colourOf(n.l);
  dot.title = n.l === null ? "no persona label" : "persona: " + n.l + (n.f & 4 ? " (by hand)" : "");
  r.append(dot);
  r.append(el("span", n.a === "m" ? "who m" : "who", n.a === "m" ? "M" : "H"));
  r.append(el("span", "txt", preview(n.x)));
  if (n.l !== null) {
    const c = el("span", "chip", n.l);
    c.title = n.l;
    c.style.borderColor = colourOf(n.l);
    r.append(c);
  }
  if (n.f & 2) r.append(el("span", "badge star", "\u2605"));
  if (n.f & 1) r.append(el("span", "badge", "\u2702 pruned"));
  for (const t of n.g || []) r.append(el("span", "badge", "#" + t));
  if (nk) r.append(el("span", "badge", "(" + nk + ")"));
  if (n.i === src.current()) r.append(el("span", "badge cur", "\u25c9 current"));
  if (n.m !== undefined && n.m !== null) {
    const bar = el("span", "pbar");
    const fill = el("i");
    fill.style.width = (100 * Math.exp(n.m)).toFixed(1) + "%";
    bar.title = "mean token probability " + pct(Math.exp(n.m));
    bar.append(fill);
    r.append(bar);
  }
  if (n.i === selected) r.classList.add("sel");
  if (n.f & 1) r.classList.add("pruned");
  if (changed.has(n.i)) r.classList.add("chg");
  return r;
}
function renderTree() {
  const box = $("tree");
  const root = src.root();
  const rootNode = root === null ? undefined : src.get(root);
  if (!rootNode) { box.replaceChildren(el("div", "empty", "(no tree at this point)")); return; }
  const frag = document.createDocumentFragment();
  const stack = [[root, 0, null]];
  while (stack.length) {
    const [id, depth, more] = stack.pop();
    if (more !== null) {
      const m = el("div", "more", "\u2026 show " + Math.min(more.left, CHUNK) + " more of " +
        more.total + " children");
      m.dataset.more = more.parent;
      m.style.paddingLeft = (6 + Math.min(depth, MAX_INDENT) * 14 + 20) + "px";
      frag.append(m);
      continue;
    }
    const n = src.get(id);
    if (!n) continue;
    frag.append(row(n, depth));
    if (!expanded.has(id)) continue;
    const ks = visibleKids(id);
    const lim = chunks.get(id) || CHUNK;
    if (ks.length > lim) {
      stack.push([null, depth + 1, { parent: id, left: ks.length - lim, total: ks.length }]);
    }
    for (let j = Math.min(lim, ks.length) - 1; j >= 0; j--) stack.push([ks[j], depth + 1, null]);
  }
  box.replaceChildren(frag);
}
function scrollToSelected() {
  const r = $("tree").querySelector(".row.sel");
  if (r) r.scrollIntoView({ block: "nearest" });
}

// ---- the reading pane: the path's text, tokens shaded by probability -----------------------
function pathOf(id) {
  const out = [];
  const seen = new Set();
  let n = src.get(id);
  while (n && !seen.has(n.i)) {
    seen.add(n.i);
    out.push(n);
    n = n.p === null ? undefined : src.get(n.p);
  }
  return out.reverse();
}
function tokensFor(n) {
  // In a replay the text may have been edited since: tokens only if the text is still the same.
  const f = byId.get(n.i);
  if (!f || !f.t) return null;
  return f.x === n.x ? f : null;
}
function renderReading() {
  const box = $("text");
  const path = pathOf(selected);
  const frag = document.createDocumentFragment();
  let budget = TOKEN_BUDGET;
  const segs = [];
  for (let j = path.length - 1; j >= 0; j--) {
    const n = path[j];
    const seg = el("span", "seg" + (n.a === "h" ? " human" : ""));
    const read = byId.get(n.i);
    if (read && read.rb) seg.classList.add("read");
    seg.dataset.id = n.i;
    if (n.i === selected) seg.classList.add("mine"); else seg.classList.add("before");
    const f = tokensFor(n);
    if (f && budget >= f.t.s.length) {
      budget -= f.t.s.length;
      const T = f.t;
      for (let t = 0; t < T.s.length; t++) {
        const s = el("span", "tok", STR[T.s[t]]);
        s.dataset.n = f.i;
        s.dataset.j = t;
        const lp = T.lp[t];
        if (lp !== null) s.style.background = probColour(Math.exp(lp));
        seg.append(s);
      }
      if (T.rest) seg.append(document.createTextNode(T.rest));
    } else {
      seg.append(document.createTextNode(n.x));
    }
    segs.push(seg);
  }
  for (let j = segs.length - 1; j >= 0; j--) frag.append(segs[j]);
  box.replaceChildren(frag);
  const sel = src.get(selected);
  $("crumbs").textContent = sel ? "Path of node #" + sel.i + ": " + path.length +
    " node(s) from the root. Hover a token for the alternatives the model weighed." : "";
  renderCard(sel, path);
  const mine = box.querySelector(".seg.mine");
  if (mine && path.length > 1) mine.scrollIntoView({ block: "nearest" });
}
function kv(box, k, v) { box.append(el("span", null, k), el("span", null, v)); }
function renderCard(n, path) {
  const card = $("card");
  card.replaceChildren();
  if (!n) return;
  card.append(el("h2", null, "Node #" + n.i + (n.a === "m" ? " \u2014 written by the model"
    : " \u2014 written by a person")));
  const g = el("div", "kv");
  const f = byId.get(n.i);
  kv(g, "persona", n.l === null ? "none" : n.l + (n.f & 4 ? " (labelled by hand)" : " (model)"));
  kv(g, "marks", [(n.f & 2) ? "bookmarked" : "", (n.f & 1) ? "pruned" : ""].filter(Boolean)
    .join(", ") || "none");
  if ((n.g || []).length) kv(g, "tags", n.g.join(", "));
  if (f && f.m !== undefined) {
    kv(g, "mean token p", pct(Math.exp(f.m)) + "  (perplexity " + Math.exp(-f.m).toFixed(2) + ")");
  }
  let lps = 0, cnt = 0;
  for (const p of path) {
    const q = tokensFor(p);
    if (!q) continue;
    for (const lp of q.t.lp) if (lp !== null) { lps += lp; cnt++; }
  }
  if (cnt) kv(g, "path", cnt + " scored tokens, cumulative logprob " + lps.toFixed(2));
  if (f && f.rb) kv(g, "probabilities", "read by " + f.rb + " (scored, not sampled)");
  if (f) kv(g, "created", stamp(f.c));
  if (f && f.gen) {
    const x = f.gen;
    kv(g, "model", x.model + (x.sha256 ? "  sha256 " + x.sha256.slice(0, 12) + "\u2026" : ""));
    kv(g, "sampler", "temperature " + x.temperature + ", top_k " + x.top_k + ", top_p " +
      x.top_p + ", min_p " + x.min_p + ", max " + x.max_tokens + " tokens");
    const seed = x.seed === null ? "none" : String(x.seed);
    kv(g, "seed", seed + (x.batch ? "  (branch " + x.batch + ")" : ""));
  }
  card.append(g);
  if (src === REPLAY && f) {
    card.append(el("div", "note", "In a replay, the text and marks are as they were then; " +
      "probabilities, settings and the posterior are the node's in the final loom."));
  }
  if (f && f.pp) {
    const post = el("div", "post");
    for (const [name, p] of Object.entries(f.pp)) {
      const bar = el("b");
      bar.style.width = (100 * p).toFixed(1) + "%";
      bar.style.background = colourOf(name);
      const wrap = el("span");
      wrap.append(bar);
      post.append(el("span", null, name), wrap, el("span", null, pct(p)));
    }
    const what = "persona posterior" + (f.cx ? " \u2014 collapse here" : "");
    card.append(el("div", "note", what), post);
  }
  renderCensuses(card, n.i);
}

// ---- censuses: how often each persona came next from the node, with 95 % intervals --------
function renderCensuses(card, id) {
  for (const c of (D.censuses || {})[String(id)] || []) {
    const where = c.token_index === null || c.token_index === undefined ? ""
      : " at its token " + (c.token_index + 1);
    card.append(el("div", "note", "census" + where + ": " + c.rollouts + " rollouts \u00d7 " +
      c.tokens + " tokens, seed " + c.seed + (c.model ? ", " + c.model : "") + ", " +
      stamp(c.ts)));
    for (const o of c.outcomes) {
      if (c.outcomes.length > 1) {
        card.append(el("div", "note", "after \u2039" + shown(o.text) + "\u203a (p " +
          pct(o.p) + ")"));
      }
      const post = el("div", "post census");
      for (const [label, count, share, low, high, examples] of o.labels) {
        const bar = el("b");
        bar.style.width = (100 * share).toFixed(1) + "%";
        bar.style.background = colourOf(label);
        const wrap = el("span");
        wrap.title = "95% interval " + pct(low) + " \u2013 " + pct(high);
        wrap.append(bar);
        post.append(el("span", null, label), wrap,
          el("span", null, pct(share) + "  [" + pct(low) + " \u2013 " + pct(high) + "]  " +
            count + "/" + o.n));
        for (const text of examples) {
          const ex = el("span", "example", "\u201c" + preview(text) + "\u201d");
          ex.style.gridColumn = "1 / -1";
          post.append(ex);
        }
      }
      card.append(post);
    }
  }
}

// ---- the tooltip: probability, entropy and the top-k alternatives of a token --------------
const tip = $("tip");
function showTip(span) {
  const f = byId.get(Number(span.dataset.n));
  const j = Number(span.dataset.j);
  if (!f || !f.t) return;
  const T = f.t;
  const text = STR[T.s[j]];
  tip.replaceChildren();
  tip.append(el("div", "head", "\u201c" + shown(text) + "\u201d"));
  const lp = T.lp[j];
  const bits = [];
  if (lp !== null) bits.push("p " + pct(Math.exp(lp)), "logprob " + lp.toFixed(3));
  else bits.push("not read by a model: no probability");
  if (f.rb) bits.push("read by " + f.rb + ", not sampled");
  if (T.e && T.e[j] !== null) bits.push("entropy " + T.e[j].toFixed(3) + " nats");
  tip.append(el("div", "meta", bits.join("   ")));
  if (T.k) {
    const table = el("table");
    for (let c = 0; c < T.k; c++) {
      const idx = T.ai[j * T.k + c];
      const alp = T.al[j * T.k + c];
      if (idx < 0 || alp === null) continue;
      const p = Math.exp(alp);
      const tr = el("tr", STR[idx] === text ? "chosen" : null);
      const bar = el("span", "bar");
      bar.style.width = Math.max(1, Math.round(80 * p)) + "px";
      const cell = el("td");
      cell.append(bar);
      tr.append(el("td", null, shown(STR[idx])), cell, el("td", null, pct(p)));
      table.append(tr);
    }
    tip.append(el("div", "meta", "top " + T.k + " the model weighed:"), table);
  }
  tip.hidden = false;
  const r = span.getBoundingClientRect();
  const w = tip.offsetWidth, h = tip.offsetHeight;
  let x = Math.min(r.left, window.innerWidth - w - 8);
  let y = r.bottom + 6;
  if (y + h > window.innerHeight - 4) y = Math.max(4, r.top - h - 6);
  tip.style.left = Math.max(4, x) + "px";
  tip.style.top = y + "px";
}
$("text").addEventListener("mouseover", (e) => {
  const t = e.target.closest ? e.target.closest(".tok") : null;
  if (t) showTip(t); else tip.hidden = true;
});
$("text").addEventListener("mouseleave", () => { tip.hidden = true; });
$("text").addEventListener("click", (e) => {
  const s = e.target.closest ? e.target.closest(".seg") : null;
  if (s) select(Number(s.dataset.id), true);
});

// ---- selection and tree interaction --------------------------------------------------------
function select(id, reveal) {
  if (!src.get(id)) return;
  selected = id;
  if (reveal) expandPathTo(id);
  renderTree();
  renderReading();
  scrollToSelected();
}
$("tree").addEventListener("click", (e) => {
  const more = e.target.closest(".more");
  if (more) {
    const p = Number(more.dataset.more);
    chunks.set(p, (chunks.get(p) || CHUNK) + CHUNK);
    renderTree();
    return;
  }
  const tog = e.target.closest("[data-toggle]");
  if (tog) {
    const id = Number(tog.dataset.toggle);
    if (expanded.has(id)) expanded.delete(id); else expanded.add(id);
    renderTree();
    return;
  }
  const r = e.target.closest(".row");
  if (r) { selected = Number(r.dataset.id); renderTree(); renderReading(); }
});
$("tree").addEventListener("keydown", (e) => {
  const rows = Array.from($("tree").querySelectorAll(".row"));
  const at = rows.findIndex((r) => Number(r.dataset.id) === selected);
  const n = src.get(selected);
  if (e.key === "ArrowDown" && at + 1 < rows.length) select(Number(rows[at + 1].dataset.id));
  else if (e.key === "ArrowUp" && at > 0) select(Number(rows[at - 1].dataset.id));
  else if (e.key === "ArrowRight" && n) { expanded.add(n.i); renderTree(); }
  else if (e.key === "ArrowLeft" && n) {
    if (expanded.has(n.i)) { expanded.delete(n.i); renderTree(); }
    else if (n.p !== null) select(n.p);
  } else return;
  e.preventDefault();
  scrollToSelected();
});
$("pruned").addEventListener("change", (e) => { showPruned = e.target.checked; renderTree(); });
$("collapse").addEventListener("click", () => {
  expanded.clear();
  expandPathTo(selected);
  renderTree();
});

// ---- the timeline --------------------------------------------------------------------------
const slider = $("slider");
function renderEvents() {
  const list = $("events");
  const k = Number(slider.value);
  const frag = document.createDocumentFragment();
  const lo = Math.max(0, k - 150), hi = Math.min(EVENTS.length, k + 150);
  if (lo > 0) frag.append(el("li", "gap", "\u2026 " + lo + " earlier events"));
  for (let j = lo; j < hi; j++) {
    const ev = EVENTS[j];
    const li = el("li", j + 1 === k ? "on" : null);
    li.dataset.k = j + 1;
    li.append(el("span", "seq", ev[0]), el("span", null, stamp(ev[1])), el("span", "k", ev[2]),
      el("span", "what", (ev[3] === null ? "" : "#" + ev[3] + "  ") + ev[4]));
    frag.append(li);
  }
  if (hi < EVENTS.length) {
    frag.append(el("li", "gap", "\u2026 " + (EVENTS.length - hi) + " later events"));
  }
  list.replaceChildren(frag);
  const on = list.querySelector(".on");
  if (on) on.scrollIntoView({ block: "nearest" });
}
function seek(k) {
  k = Math.max(0, Math.min(EVENTS.length, k));
  slider.value = String(k);
  applyTo(k);
  src = k === EVENTS.length ? FINAL : REPLAY;
  const ev = k > 0 ? EVENTS[k - 1] : null;
  changed = new Set(ev && src === REPLAY ? ev[5].map((c) => c[0]) : []);
  if (!src.get(selected)) {
    const cur = src.current();
    selected = cur !== null && src.get(cur) ? cur : src.root();
  }
  if (ev && ev[3] !== null && src.get(ev[3])) { expandPathTo(ev[3]); }
  if (src.current() !== null) expandPathTo(src.current());
  $("tlabel").textContent = k === 0 ? "before the first event" : "after event " + ev[0] + " of " +
    EVENTS[EVENTS.length - 1][0] + ": " + ev[2] + " at " + stamp(ev[1]);
  const banner = $("banner");
  banner.hidden = src === FINAL;
  banner.textContent = src === FINAL ? "" : "Replay: the tree as it was after event " +
    (ev ? ev[0] : 0) + " (" + (ev ? ev[2] + " \u2014 " + ev[4] : "nothing yet") +
    "). Move the slider to the end for the final tree.";
  renderTree();
  renderReading();
  renderEvents();
}
let timer = null;
function play() {
  if (timer !== null) {
    clearInterval(timer);
    timer = null;
    $("play").textContent = "\u25b6 play";
    return;
  }
  if (Number(slider.value) >= EVENTS.length) seek(0);
  const step = Math.max(1, Math.round(EVENTS.length / 200));
  $("play").textContent = "\u275a\u275a pause";
  timer = setInterval(() => {
    const k = Number(slider.value) + step;
    seek(k);
    if (k >= EVENTS.length) play();
  }, 140);
}
if (EVENTS.length) {
  slider.max = String(EVENTS.length);
  slider.value = String(EVENTS.length);
  slider.addEventListener("input", () => seek(Number(slider.value)));
  $("play").addEventListener("click", play);
  $("latest").addEventListener("click", () => seek(EVENTS.length));
  $("events").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-k]");
    if (li) seek(Number(li.dataset.k));
  });
} else {
  $("tlcontrols").hidden = true;
  $("events").hidden = true;
}
$("tlnote").textContent = D.timelineNote || (EVENTS.length + " events: drag the slider to see " +
  "the tree as it was after each one");

// ---- header --------------------------------------------------------------------------------
$("title").textContent = D.title || "Untitled loom";
const nModel = D.nodes.filter((n) => n.a === "m").length;
const nMarked = D.nodes.filter((n) => n.f & 2).length;
const nPruned = D.nodes.filter((n) => n.f & 1).length;
$("stats").textContent = D.nodes.length + " nodes \u00b7 " + nModel + " by the model \u00b7 " +
  nMarked + " bookmarked \u00b7 " + nPruned + " pruned \u00b7 " + EVENTS.length + " events";
const legend = $("legend");
for (const p of D.personas) {
  const c = el("span", "chip");
  const dot = el("i");
  dot.style.background = p.color;
  c.append(dot, document.createTextNode(p.name));
  c.title = p.description + (p.prior !== null ? "  (prior " + p.prior + ")" : "");
  legend.append(c);
}
const unl = el("span", "chip");
const ud = el("i");
ud.style.background = D.unlabelled;
unl.append(ud, document.createTextNode("no label"));
legend.append(unl);
const scale = $("scale");
const grad = el("b");
const stops = [];
for (let p = 0; p <= 1.0001; p += 0.25) stops.push(probColour(p));
grad.style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
scale.append(el("span", null, "token p: 0"), grad, el("span", null, "1"));

// ---- start on the loom's current node ------------------------------------------------------
if (!byId.has(selected)) selected = D.root;
expanded.add(D.root);
expandPathTo(selected);
renderTree();
renderReading();
if (EVENTS.length) renderEvents();
scrollToSelected();
document.body.dataset.ready = "1";
})();
