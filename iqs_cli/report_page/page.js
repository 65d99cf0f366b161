(function () {
  "use strict";
  // The report's data (html_report.py): one record per shot, thumbnails as data URIs.
  const data = JSON.parse(document.getElementById("iqs-data").textContent);
  const LOOK = {
    rejected: { icon: "✕", text: "Rejected" },
    pending: { icon: "○", text: "Pending" },
    accepted: { icon: "✓", text: "Accepted" },
    failed: { icon: "!", text: "Not scored" },
  };
  const KEYS = { r: "rejected", p: "pending", a: "accepted" };
  const FILTERS = [
    ["all", "All", () => true],
    ["rejected", "✕ Rejected", (s) => label(s) === "rejected"],
    ["pending", "○ Pending", (s) => label(s) === "pending"],
    ["accepted", "✓ Accepted", (s) => label(s) === "accepted"],
    ["moved", "↪ Moved", (s) => !!s.moved_to],
    ["changed", "✎ Changed", (s) => changes.has(s.id)],
    ["failed", "! Not scored", (s) => !s.label],
  ];
  const shots = data.shots;
  const changes = new Map(); // shot id -> label set on this page
  const storeKey = "iqs-report:" + data.made + ":" + data.roots.join("|");
  const grid = document.getElementById("grid");
  const tiles = [];
  let filter = "all";
  let current = null; // the shot id of the roving focus

  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  // The label a shot has now: set on this page, else a person's in the sidecar, else iqs's.
  const original = (s) => (s.person && s.person.label) || s.label || "failed";
  const label = (s) => changes.get(s.id) || original(s);
  const base = (p) => p.slice(p.lastIndexOf("/") + 1);
  // Where a moved shot is now: its folder, or the whole path when the move renamed it.
  const movedTo = (s) => base(s.moved_to) !== base(s.moved_from) ? s.moved_to
    : s.moved_to.slice(0, s.moved_to.lastIndexOf("/") + 1) || "./";
  const starsText = (n) => "★".repeat(n) + "☆".repeat(5 - n);

  function describe(s) {
    const parts = [s.name, LOOK[label(s)].text];
    if (s.mos !== null) parts.push("MOS " + s.mos);
    if (s.stars) parts.push(s.stars + (s.stars === 1 ? " star" : " stars"));
    if (s.reasons.length) parts.push(s.reasons.join(", "));
    if (s.moved_to) parts.push("moved to " + s.moved_to);
    if (changes.has(s.id)) parts.push("changed here, was " + LOOK[original(s)].text);
    return parts.join(", ");
  }

  function build(s) {
    const li = el("li", { class: "tile", tabindex: "-1", "data-id": s.id });
    const pic = el("div", { class: "pic" });
    if (s.thumb) {
      pic.append(el("img", { src: s.thumb, alt: "", loading: "lazy", decoding: "async" }));
    } else {
      pic.append(el("span", { class: "nopic" }, s.error || s.thumb_error || "no preview"));
    }
    const body = el("div", { class: "body" });
    body.append(el("span", { class: "badge" }));
    body.append(el("span", { class: "name" }, s.name + (s.others.length ? " +" + s.others.join(" +") : "")));
    if (s.mos !== null) {
      const score = el("span", { class: "score" });
      score.append(el("span", {}, "MOS " + s.mos.toFixed(0)));
      if (s.stars) score.append(el("span", { class: "stars", "aria-hidden": "true" }, starsText(s.stars)));
      body.append(score);
    }
    if (s.reasons.length) body.append(el("span", { class: "reasons" }, s.reasons.join("; ")));
    if (s.group) {
      const rank = s.group_rank ? "#" + s.group_rank + (s.group_size ? " of " + s.group_size : "") : "";
      const best = s.group_rank === 1 ? " (best)" : s.group_best ? ", best: " + s.group_best : "";
      body.append(el("span", { class: "group" }, "burst " + s.group + " " + rank + best));
    }
    if (s.moved_to) body.append(el("span", { class: "moved" }, "↪ moved to " + movedTo(s)));
    if (s.person) body.append(el("span", { class: "person" }, "label set by a person"));
    body.append(el("span", { class: "was" }));
    li.append(pic, body);
    li.addEventListener("click", () => { focusTile(s.id); openViewer(s.id); });
    return li;
  }

  function paint(s) {
    const li = tiles[s.id];
    const now = label(s);
    li.className = "tile label-" + now + (current === s.id ? " current" : "");
    li.dataset.label = now;
    li.querySelector(".badge").innerHTML = "";
    li.querySelector(".badge").append(el("span", { "aria-hidden": "true" }, LOOK[now].icon), LOOK[now].text);
    li.querySelector(".was").textContent = changes.has(s.id) ? "your label; was " + LOOK[original(s)].text : "";
    li.setAttribute("aria-label", describe(s));
    const img = li.querySelector("img");
    if (img) img.alt = describe(s);
  }

  // -- filters, sorting, counts

  const filterButtons = {};
  const nav = document.getElementById("filters");
  for (const [key, text] of FILTERS) {
    const b = el("button", { type: "button", "data-filter": key, "aria-pressed": String(key === filter) });
    b.append(text + " ", el("span", { class: "count" }));
    b.addEventListener("click", () => setFilter(key));
    filterButtons[key] = b;
    nav.append(b);
  }
  const matches = (s) => FILTERS.find((f) => f[0] === filter)[2](s);

  function counts() {
    for (const [key, , test] of FILTERS) {
      const n = shots.filter(test).length;
      filterButtons[key].querySelector(".count").textContent = "(" + n + ")";
      filterButtons[key].hidden = n === 0 && ["moved", "changed", "failed"].includes(key) && filter !== key;
    }
    const save = document.getElementById("save");
    save.textContent = "Save changes (" + changes.size + ")";
    save.disabled = changes.size === 0;
  }

  function setFilter(key) {
    filter = key;
    for (const [k, b] of Object.entries(filterButtons)) b.setAttribute("aria-pressed", String(k === key));
    refresh();
  }

  function refresh() {
    let shown = 0;
    for (const s of shots) {
      const hide = !matches(s);
      tiles[s.id].hidden = hide;
      shown += !hide;
    }
    document.getElementById("empty").hidden = shown > 0;
    if (current === null || tiles[current].hidden) {
      const first = visible()[0];
      setCurrent(first === undefined ? null : first);
    }
    counts();
  }

  function sortTiles(how) {
    const byName = (a, b) => a.name.localeCompare(b.name, undefined, { numeric: true });
    const mos = (s) => (s.mos === null ? Infinity : s.mos);
    const order = shots.slice().sort(how === "name" ? byName
      : how === "score-desc" ? (a, b) => (mos(b) === Infinity) - (mos(a) === Infinity) || mos(b) - mos(a) || byName(a, b)
      : (a, b) => mos(a) - mos(b) || byName(a, b));
    grid.append(...order.map((s) => tiles[s.id]));
  }

  // -- roving focus and keys

  const visible = () => Array.from(grid.children).filter((li) => !li.hidden).map((li) => Number(li.dataset.id));

  function setCurrent(id) {
    if (current !== null && tiles[current]) {
      tiles[current].tabIndex = -1;
      tiles[current].classList.remove("current");
    }
    current = id;
    if (id !== null) {
      tiles[id].tabIndex = 0;
      tiles[id].classList.add("current");
    }
  }

  function focusTile(id) {
    setCurrent(id);
    if (id !== null) {
      tiles[id].focus();
    }
  }

  function step(id, key) {
    const order = visible();
    if (!order.length) return null;
    const at = order.indexOf(id);
    if (at < 0) return order[0];
    let columns = 1;
    const top = tiles[order[0]].offsetTop;
    while (columns < order.length && tiles[order[columns]].offsetTop === top) columns++;
    const move = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns, Home: -at, End: order.length };
    return order[Math.max(0, Math.min(order.length - 1, at + move[key]))];
  }

  function setLabel(id, value) {
    const s = shots[id];
    if (value === null || value === original(s)) changes.delete(id);
    else changes.set(id, value);
    try { localStorage.setItem(storeKey, JSON.stringify(Array.from(changes))); } catch (e) { /* private mode */ }
    paint(s);
    counts();
    if (viewer.open && shown === id) showFacts(s);
    say(changes.has(id) ? s.name + ": " + LOOK[value].text : s.name + ": back to " + LOOK[original(s)].text);
  }

  function say(text) { document.getElementById("status").textContent = text; }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest("select, input, textarea, summary")) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const id = viewer.open ? shown : (e.target.closest(".tile") ? Number(e.target.closest(".tile").dataset.id) : current);
    if (KEYS[key] || key === "u") {
      if (id === null || id === undefined) return;
      e.preventDefault();
      setLabel(id, KEYS[key] || null);
      return;
    }
    if (viewer.open) {
      if (key === "ArrowLeft" || key === "ArrowRight") {
        e.preventDefault();
        const next = step(shown, key);
        if (next !== null) { focusTile(next); showInViewer(next); }
      }
      return;
    }
    if (["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"].includes(key)) {
      if (e.target.closest("button") && !e.target.closest(".tile")) return; // filter buttons, save
      e.preventDefault();
      const next = step(id === null ? -1 : id, key);
      if (next !== null) focusTile(next);
    } else if ((key === "Enter" || key === " ") && e.target.closest(".tile")) {
      e.preventDefault();
      openViewer(id);
    }
  });

  // -- the large view

  const viewer = document.getElementById("viewer");
  const viewerImg = document.getElementById("viewer-img");
  let shown = null;

  function fact(dl, term, value) {
    if (value === undefined || value === null || value === "") return;
    dl.append(el("dt", {}, term), el("dd", {}, value));
  }

  function showFacts(s) {
    document.getElementById("viewer-name").textContent = s.name;
    const box = document.getElementById("viewer-facts");
    box.innerHTML = "";
    const badge = el("span", { class: "badge label-" + label(s) });
    badge.append(el("span", { "aria-hidden": "true" }, LOOK[label(s)].icon), LOOK[label(s)].text);
    box.append(badge);
    const dl = el("dl");
    if (changes.has(s.id)) fact(dl, "Your label", LOOK[changes.get(s.id)].text + " (not saved until Save changes)");
    if (s.person) fact(dl, "Set by a person", LOOK[s.person.label].text);
    fact(dl, "iqs said", s.label ? LOOK[s.label].text : null);
    fact(dl, "MOS", s.mos === null ? null : s.mos.toFixed(1) + " of 100");
    if (s.stars) fact(dl, "Stars", starsText(s.stars) + " (" + s.stars + ")");
    fact(dl, "Reasons", s.reasons.join("; "));
    const p = s.probabilities;
    if (p && p.rejected !== undefined) {
      fact(dl, "Probabilities", "rejected " + p.rejected.toFixed(2) + ", pending " + p.pending.toFixed(2) + ", accepted " + p.accepted.toFixed(2));
    }
    if (s.group) fact(dl, "Burst", s.group + (s.group_rank ? ", #" + s.group_rank : "") + (s.group_size ? " of " + s.group_size : "") + (s.group_best && s.group_rank !== 1 ? "; best: " + s.group_best : ""));
    if (s.moved_to) fact(dl, "Moved", "from " + s.moved_from + " to " + s.moved_to + " by iqs cull");
    fact(dl, "Error", s.error);
    fact(dl, "File", s.path);
    if (s.files.length > 1) fact(dl, "Files", s.files.join(", "));
    box.append(dl);
    if (s.url) {
      const a = el("a", { href: s.url, target: "_blank", rel: "noopener" }, "Open the original");
      box.append(el("p"), a);
    }
    for (const b of viewer.querySelectorAll("[data-set]")) {
      b.classList.add("label-" + b.dataset.set);
      b.setAttribute("aria-pressed", String(b.dataset.set === label(s)));
    }
  }

  function showInViewer(id) {
    const s = shots[id];
    shown = id;
    viewerImg.src = s.thumb || "";
    viewerImg.alt = describe(s);
    viewerImg.dataset.full = "no";
    if (s.url) { // the original, where the browser can show it; the thumbnail until then
      const full = new Image();
      full.onload = () => { if (shown === id) { viewerImg.src = s.url; viewerImg.dataset.full = "yes"; } };
      full.src = s.url;
    }
    showFacts(s);
  }

  function openViewer(id) {
    if (id === null || id === undefined) return;
    showInViewer(id);
    if (!viewer.open) viewer.showModal();
  }

  viewer.addEventListener("close", () => { if (shown !== null) focusTile(shown); });
  viewer.addEventListener("click", (e) => { if (e.target === viewer) viewer.close(); });
  document.getElementById("viewer-close").addEventListener("click", () => viewer.close());
  for (const [id, key] of [["viewer-prev", "ArrowLeft"], ["viewer-next", "ArrowRight"]]) {
    document.getElementById(id).addEventListener("click", () => {
      const next = step(shown, key);
      if (next !== null) { setCurrent(next); showInViewer(next); }
    });
  }
  for (const b of viewer.querySelectorAll("[data-set]")) {
    b.addEventListener("click", () => setLabel(shown, b.dataset.set));
  }

  // -- the changes file for `iqs apply`

  function changesFile() {
    return {
      format: data.format, version: data.version, made: new Date().toISOString(),
      report: data.title, model: data.model, roots: data.roots,
      changes: Array.from(changes).map(([id, value]) => {
        const s = shots[id];
        return { path: s.path, files: s.files, label: value, stars: s.stars || null, was: original(s) };
      }),
    };
  }

  document.getElementById("save").addEventListener("click", () => {
    const blob = new Blob([JSON.stringify(changesFile(), null, 1) + "\n"], { type: "application/json" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "changes.json" });
    document.body.append(a);
    a.click();
    a.remove();
    say("Saved " + changes.size + " change" + (changes.size === 1 ? "" : "s") +
        " as changes.json (in your downloads folder). Write them as XMP labels with: iqs apply changes.json");
  });

  // -- start

  const meta = ["judged by " + data.model, "made " + data.made.replace("T", " ")];
  if (data.cached) meta.push(data.cached + " of " + shots.length + " from the results cache");
  document.getElementById("meta").textContent = meta.join(" · ");
  for (const s of shots) tiles[s.id] = build(s);
  try {
    for (const [id, value] of JSON.parse(localStorage.getItem(storeKey) || "[]")) {
      if (shots[id] && LOOK[value]) changes.set(id, value);
    }
    if (changes.size) say("Restored " + changes.size + " unsaved change(s) from this browser.");
  } catch (e) { /* no storage */ }
  for (const s of shots) paint(s);
  const sort = document.getElementById("sort");
  sort.addEventListener("change", () => { sortTiles(sort.value); refresh(); });
  sortTiles(sort.value);
  refresh();
})();
