// tgraph viewer: composes per-scope dot layouts in the browser. Every name from the
// graph reaches the DOM through textContent or setAttribute, never as markup.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("tgraph-data").textContent);
  const SVGNS = "http://www.w3.org/2000/svg";
  const FILLS = ["#f4f6f8", "#e8eef5", "#f9f9f9", "#edf3ea", "#f8f4ec"];
  const PAD = 6;
  const FONT = "Helvetica, Arial, 'Liberation Sans', sans-serif";

  function el(tag, attrs, parent, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function sv(tag, attrs, parent, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  // ---- page scaffold --------------------------------------------------------------
  const app = el("div", { id: "app" }, document.body);
  const canvas = el("div", { id: "canvas" }, app);
  const svg = sv("svg", { id: "graph" }, canvas);
  const viewport = sv("g", { id: "viewport" }, svg);
  const side = el("aside", { id: "side" }, app);
  el("h1", {}, side, DATA.title);
  const bar = el("div", { id: "toolbar" }, side);
  const viewSel = el("select", { id: "view-select", title: "view" }, bar);
  DATA.views.forEach((v, i) => el("option", { value: String(i) }, viewSel, v.name));
  const fitBtn = el("button", { id: "fit" }, bar, "fit");
  const openAllBtn = el("button", { id: "expand-all" }, bar, "expand all");
  const closeAllBtn = el("button", { id: "collapse-all" }, bar, "collapse all");
  const source = el("div", { id: "source", class: "muted" }, side);
  el("h2", {}, side, "Search");
  const search = el("input", { id: "search", type: "search", placeholder: "name, op or scope" }, side);
  const results = el("ul", { id: "results" }, side);
  el("h2", {}, side, "Selected");
  const info = el("div", { id: "info" }, side);
  el("div", { class: "muted" }, info, "Click a box: a block opens; click its frame to close it.");
  const attnHead = el("h2", {}, side, "Attention");
  const attn = el("div", { id: "attn" }, side);
  const tip = el("div", { id: "tip" }, document.body);

  // ---- state ----------------------------------------------------------------------
  const state = { view: 0, open: DATA.views.map(initialOpen), selected: null, zoom: { x: 0, y: 0, k: 1 } };
  let elements = new Map(); // key -> [svg g]
  let drawn = null;

  function level(path) {
    const parts = path.split("/");
    return parts.length - (parts[0] === "backward" ? 1 : 0);
  }
  function initialOpen(V) {
    const open = new Set();
    for (const key in V.layouts)
      if (key && (V.open < 0 || level(key) < V.open)) open.add(key);
    return open;
  }
  const V = () => DATA.views[state.view];

  // ---- composing layouts ----------------------------------------------------------
  function cloneOps(ops) {
    return ops.map((op) => (Array.isArray(op[1]) ? [op[0], op[1].slice(), ...op.slice(2)] : op.slice()));
  }

  function mapPoints(ops, fx, fy) {
    for (const op of ops) {
      const k = op[0];
      if (k === "T" || k === "E" || k === "e") {
        if (k === "T") { op[1] = fx(op[1]); op[2] = fy(op[2]); }
        else { op[1][0] = fx(op[1][0]); op[1][1] = fy(op[1][1]); }
      } else if (Array.isArray(op[1])) {
        const p = op[1];
        for (let i = 0; i < p.length; i += 2) { p[i] = fx(p[i]); p[i + 1] = fy(p[i + 1]); }
      }
    }
  }

  // An arrowhead keeps its shape: it moves with the stretched position of its centre.
  function moveRigid(ops, fx, fy) {
    let sx = 0, sy = 0, n = 0;
    for (const op of ops) if (Array.isArray(op[1]))
      for (let i = 0; i < op[1].length; i += 2) { sx += op[1][i]; sy += op[1][i + 1]; n++; }
    if (!n) return;
    const dx = fx(sx / n) - sx / n, dy = fy(sy / n) - sy / n;
    mapPoints(ops, (x) => x + dx, (y) => y + dy);
  }

  function mapShapes(content, fx, fy) {
    for (const n of content.nodes) {
      const x = fx(n.x), y = fy(n.y);
      n.dx = x - n.x; n.dy = y - n.y; n.x = x; n.y = y;
    }
    for (const s of content.shapes) {
      if (s.role === "edge") moveEdge(s, fx, fy);
      else mapPoints(s.ops, fx, fy);
    }
  }

  // An edge's ends (and arrowheads) move with the boxes they touch; the rest is stretched.
  function moveEdge(s, fx, fy) {
    const spline = s.ops.find((op) => op[0] === "B" || op[0] === "b");
    const p = spline ? spline[1].slice() : null;
    mapPoints(s.ops, fx, fy);
    const ends = [[s.tn, 0], [s.hn, p ? p.length - 4 : 0]];
    if (p) for (const [n, at] of ends) if (n) {
      for (let i = at; i < at + 4; i += 2) { spline[1][i] = p[i] + n.dx; spline[1][i + 1] = p[i + 1] + n.dy; }
    }
    for (const a of s.arrows) {
      const near = p && nearHead(a, p) ? s.hn : s.tn;
      if (near) mapPoints(a, (x) => x + near.dx, (y) => y + near.dy);
      else moveRigid(a, fx, fy);
    }
  }
  function nearHead(ops, p) {
    const q = ops.find((op) => Array.isArray(op[1]))[1];
    const d = (i) => Math.hypot(q[0] - p[i], q[1] - p[i + 1]);
    return d(p.length - 2) <= d(0);
  }

  // Stretch everything around the box [x0, x0+w] x [y0, y0+h] so it becomes W x H (top-left
  // corner kept): monotone in x and y, so nothing that was apart overlaps, and edges stay
  // attached to the box's border.
  function stretch(content, x0, y0, w, h, W, H) {
    const x1 = x0 + w, y1 = y0 + h, dw = W - w, dh = H - h;
    mapShapes(content, (x) => (x < x0 ? x : x > x1 ? x + dw : x0 + (x - x0) * (W / w)),
              (y) => (y < y0 ? y : y > y1 ? y + dh : y0 + (y - y0) * (H / h)));
    content.w += dw;
    content.h += dh;
  }

  function shift(content, dx, dy) {
    mapShapes(content, (x) => x + dx, (y) => y + dy);
  }

  function compose(view, key, depth, open) {
    const L = view.layouts[key];
    const nodes = L.nodes.map((n) => Object.assign({}, n));
    const content = {
      w: L.w, h: L.h, nodes: nodes,
      shapes: [{ role: "label", ops: cloneOps(L.label) }].concat(
        L.shapes.map((s) => ({ role: s.role, tail: s.tail, head: s.head, ops: cloneOps(s.ops),
                               arrows: (s.arrows || []).map(cloneOps),
                               tn: nodes[s.t], hn: nodes[s.h] }))),
    };
    for (const n of content.nodes.slice()) {
      if (!n.block || !open.has(n.block) || !view.layouts[n.block]) continue;
      const child = compose(view, n.block, depth + 1, open);
      const W = Math.max(child.w + 2 * PAD, n.w), H = Math.max(child.h + 2 * PAD, n.h);
      const x0 = n.x - n.w / 2, y0 = n.y - n.h / 2;
      content.nodes.splice(content.nodes.indexOf(n), 1);
      for (const s of content.shapes) {  // edges at the block now end on its frame
        if (s.tn === n) s.tn = null;
        if (s.hn === n) s.hn = null;
      }
      stretch(content, x0, y0, n.w, n.h, W, H);
      const left = x0;
      content.shapes.push({
        role: "frame", key: n.block, depth: depth + 1,
        ops: [["P", [left, y0, left + W, y0, left + W, y0 + H, left, y0 + H]]],
      });
      shift(child, left + (W - child.w) / 2, y0 + (H - child.h) / 2);
      content.nodes.push(...child.nodes);
      content.shapes.push(...child.shapes);
    }
    return content;
  }

  // ---- drawing xdot operations ----------------------------------------------------
  function drawOps(g, ops) {
    let pen = "#000000", fill = "none", size = 14, face = FONT, bold = false, dash = null, width = 1;
    const stroke = (e) => {
      e.setAttribute("stroke", pen);
      if (width !== 1) e.setAttribute("stroke-width", width);
      if (dash) e.setAttribute("stroke-dasharray", dash);
    };
    for (const op of ops) {
      switch (op[0]) {
        case "c": pen = op[1]; break;
        case "C": fill = op[1]; break;
        case "S": {
          const s = op[1];
          if (s === "dashed") dash = "5,2";
          else if (s === "dotted") dash = "1,2";
          else if (s === "solid") dash = null;
          else if (s === "bold") width = 2;
          else if (s.startsWith("setlinewidth(")) width = parseFloat(s.slice(13));
          break;
        }
        case "F": size = op[1]; break;
        case "t": bold = (op[1] & 1) === 1; break;
        case "T": {
          const anchor = { l: "start", c: "middle", r: "end" }[op[3]] || "middle";
          const t = sv("text", { x: op[1], y: op[2], "text-anchor": anchor, "font-size": size,
                                 "font-family": face, fill: pen }, g, op[4]);
          if (bold) t.setAttribute("font-weight", "bold");
          // dot sized the box for its own font's metrics; the browser may pick a wider font
          // (DejaVu where Helvetica is missing): the text is drawn at dot's width
          if (op[5] > 0) {
            t.setAttribute("textLength", op[5]);
            t.setAttribute("lengthAdjust", "spacingAndGlyphs");
          }
          break;
        }
        case "P": case "p": case "L": {
          const pts = [];
          for (let i = 0; i < op[1].length; i += 2) pts.push(op[1][i] + "," + op[1][i + 1]);
          const e = sv(op[0] === "L" ? "polyline" : "polygon",
                       { points: pts.join(" "), fill: op[0] === "P" ? fill : "none" }, g);
          stroke(e);
          break;
        }
        case "B": case "b": {
          const p = op[1];
          let d = "M" + p[0] + "," + p[1];
          for (let i = 2; i + 5 < p.length; i += 6)
            d += " C" + p[i] + "," + p[i + 1] + " " + p[i + 2] + "," + p[i + 3] + " " + p[i + 4] + "," + p[i + 5];
          stroke(sv("path", { d: d, fill: op[0] === "b" ? fill : "none" }, g));
          break;
        }
        case "E": case "e":
          stroke(sv("ellipse", { cx: op[1][0], cy: op[1][1], rx: op[2], ry: op[3],
                                 fill: op[0] === "E" ? fill : "none" }, g));
          break;
      }
    }
  }

  function render() {
    const view = V();
    const t0 = performance.now();
    const content = compose(view, "", 0, state.open[state.view]);
    viewport.textContent = "";
    elements = new Map();
    const remember = (key, g) => {
      if (!key) return;
      if (!elements.has(key)) elements.set(key, []);
      elements.get(key).push(g);
    };
    const back = sv("g", { class: "frames" }, viewport);
    const lines = sv("g", { class: "edges" }, viewport);
    const boxes = sv("g", { class: "nodes" }, viewport);
    for (const s of content.shapes) {
      if (s.role === "frame") {
        const p = s.ops[0][1];
        const r = sv("rect", { class: "frame", x: p[0], y: p[1], width: p[2] - p[0], height: p[5] - p[1],
                               rx: 5, fill: FILLS[s.depth % FILLS.length], stroke: "#8c8c8c" }, back);
        r.dataset.scope = s.key;
        sv("title", {}, r, "close " + s.key);
      } else if (s.role === "edge") {
        const g = sv("g", { class: "edge" }, lines);
        g.dataset.tail = s.tail || "";
        g.dataset.head = s.head || "";
        drawOps(g, s.ops);
        for (const a of s.arrows) drawOps(g, a);
      } else {
        drawOps(sv("g", { class: s.role }, back), s.ops);
      }
    }
    for (const n of content.nodes) {
      const g = sv("g", { class: ["node", n.kind].concat(n.marks).join(" "),
                          transform: "translate(" + n.x + "," + n.y + ")" }, boxes);
      g.dataset.key = n.key;
      if (n.block) g.dataset.block = n.block;
      drawOps(g, n.ops);
      remember(n.key, g);
    }
    drawn = { w: content.w, h: content.h, nodes: content.nodes.length, ms: performance.now() - t0 };
    if (state.selected) highlight(state.selected);
    return drawn;
  }

  // ---- pan and zoom ---------------------------------------------------------------
  function applyZoom() {
    const z = state.zoom;
    viewport.setAttribute("transform", "translate(" + z.x + "," + z.y + ") scale(" + z.k + ")");
    // Zoomed out past reading size (a 10-pt label under 2.5 px) labels are not drawn, and
    // further out (a whole 10,000-box graph on one screen) neither are edges: Chromium
    // took 45 s to paint them at that scale, where the boxes alone show the structure
    svg.classList.toggle("far", z.k < 0.25);
    svg.classList.toggle("farther", z.k < 0.05);
  }
  function fit() {
    const box = canvas.getBoundingClientRect();
    const k = Math.min(box.width / (drawn.w + 20), box.height / (drawn.h + 20), 1.5);
    state.zoom = { k: k, x: (box.width - drawn.w * k) / 2, y: 10 };
    applyZoom();
  }
  function centerOn(key) {
    const g = (elements.get(key) || [])[0];
    if (!g) return;
    const m = /translate\(([-\d.e]+),([-\d.e]+)\)/.exec(g.getAttribute("transform"));
    const box = canvas.getBoundingClientRect();
    const z = state.zoom;
    z.k = Math.max(z.k, 0.8);
    z.x = box.width / 2 - parseFloat(m[1]) * z.k;
    z.y = box.height / 2 - parseFloat(m[2]) * z.k;
    applyZoom();
  }
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const z = state.zoom, r = svg.getBoundingClientRect();
    const f = Math.exp(-ev.deltaY * 0.0015), px = ev.clientX - r.left, py = ev.clientY - r.top;
    z.x = px - (px - z.x) * f;
    z.y = py - (py - z.y) * f;
    z.k *= f;
    applyZoom();
  }, { passive: false });
  let drag = null;
  svg.addEventListener("mousedown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, zx: state.zoom.x, zy: state.zoom.y, moved: false };
  });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add("dragging"); }
    state.zoom.x = drag.zx + dx;
    state.zoom.y = drag.zy + dy;
    applyZoom();
  });
  window.addEventListener("mouseup", () => { canvas.classList.remove("dragging"); setTimeout(() => { drag = null; }, 0); });

  // ---- expanding, selecting, highlighting -----------------------------------------
  function expand(scope) { state.open[state.view].add(scope); return render(); }
  function collapse(scope) {
    for (const k of Array.from(state.open[state.view]))
      if (k === scope || k.startsWith(scope + "/")) state.open[state.view].delete(k);
    return render();
  }

  svg.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    const g = ev.target.closest("g.node");
    if (g) {
      select(g.dataset.key);
      if (g.dataset.block && V().layouts[g.dataset.block]) { expand(g.dataset.block); select(g.dataset.key); }
      return;
    }
    const f = ev.target.closest("rect.frame");
    if (f) collapse(f.dataset.scope);
  });
  svg.addEventListener("mouseover", (ev) => {
    const g = ev.target.closest("g.node");
    if (!g) { tip.style.display = "none"; return; }
    tip.textContent = summary(g.dataset.key);
    tip.style.display = "block";
  });
  svg.addEventListener("mousemove", (ev) => {
    tip.style.left = ev.clientX + 14 + "px";
    tip.style.top = ev.clientY + 10 + "px";
  });
  svg.addEventListener("mouseleave", () => { tip.style.display = "none"; });

  function summary(key) {
    const f = V().nodes[key];
    if (!f) return key.replace(/^scope:/, "");
    const s = (V().stats || {})[key];
    let text = key + "\n" + f.op + " → " + f.outs.join(", ");
    if (s && s[0] && s[0].mean !== undefined)
      text += "\nmean " + fmt(s[0].mean) + "  std " + fmt(s[0].std) + "  min " + fmt(s[0].min) + "  max " + fmt(s[0].max);
    return text;
  }
  function fmt(x) { return Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(3) : x.toFixed(4); }
  function human(x) {
    for (const [d, u] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (x >= d) return (x / d).toFixed(1) + u;
    return String(x);
  }

  function scopeOfKey(key) {
    const f = V().nodes[key];
    if (f) return f.scope;
    return key.startsWith("scope:") ? key.slice(6) : null;
  }

  // Everything upstream and downstream of the selected node (a block: of all its nodes).
  function flowSet(key) {
    const flow = V().flow;
    if (!flow.index) {
      flow.index = new Map(flow.keys.map((k, i) => [k, i]));
      flow.up = flow.keys.map(() => []);
      flow.down = flow.keys.map(() => []);
      for (const [a, b] of flow.edges) { flow.down[a].push(b); flow.up[b].push(a); }
    }
    let seeds = [];
    if (flow.index.has(key)) seeds = [flow.index.get(key)];
    else if (key.startsWith("scope:")) {
      const p = key.slice(6);
      flow.keys.forEach((k, i) => {
        const s = scopeOfKey(k);
        if (s !== null && (s === p || s.startsWith(p + "/"))) seeds.push(i);
      });
    }
    const out = new Set();
    for (const adj of [flow.up, flow.down]) {
      const stack = seeds.slice(), seen = new Set(seeds);
      while (stack.length) for (const j of adj[stack.pop()]) if (!seen.has(j)) { seen.add(j); stack.push(j); }
      for (const j of seen) out.add(flow.keys[j]);
    }
    return out;
  }

  function highlight(key) {
    const keys = flowSet(key);
    const scopes = new Set();
    for (const k of keys) {
      const s = scopeOfKey(k);
      if (!s) continue;
      const parts = s.split("/");
      for (let i = 1; i <= parts.length; i++) scopes.add(parts.slice(0, i).join("/"));
    }
    const lit = (k) => keys.has(k) || k === key || (k.startsWith("scope:") && scopes.has(k.slice(6)));
    svg.classList.toggle("dim", keys.size > 0);
    for (const g of viewport.querySelectorAll("g.node")) {
      g.classList.toggle("hl", lit(g.dataset.key));
      g.classList.toggle("sel", g.dataset.key === key);
    }
    for (const g of viewport.querySelectorAll("g.edge"))
      g.classList.toggle("hl", lit(g.dataset.tail) && lit(g.dataset.head));
  }

  function row(table, name, value) {
    const tr = el("tr", {}, table);
    el("td", {}, tr, name);
    return el("td", {}, tr, value);
  }

  // ``copy``: a node of a hidden copy of a folded block, shown through the drawn node
  // ``key`` with its own name and values.
  function select(key, copy) {
    state.selected = key;
    const view = V();
    info.textContent = "";
    const table = el("table", {}, info);
    const f = view.nodes[key];
    if (f) {
      row(table, "name", copy || key);
      if (copy) row(table, "drawn as", key + " (identical blocks are folded)");
      row(table, "op", f.op);
      if (!copy) row(table, "scope", f.scope || "(top level)");
      if (Object.keys(f.attrs).length) row(table, "attrs", JSON.stringify(f.attrs));
      row(table, "inputs", f.ins.join("\n")).style.whiteSpace = "pre-wrap";
      row(table, "outputs", f.outs.join(", "));
      row(table, "params", human(f.params));
      row(table, "FLOPs", human(f.flops));
      (view.stats && view.stats[copy || key] || []).forEach((s, i) => statsRows(table, s, i));
      const p = (view.attention || []).findIndex((a) => a.node === (copy || key));
      if (p >= 0) showPattern(p);
    } else {
      const n = findDrawn(key);
      row(table, key.startsWith("scope:") ? "scope" : "item", key.replace(/^scope:/, ""));
      if (n) for (const line of n.lines.slice(1)) row(table, "", line);
    }
    highlight(key);
  }

  function findDrawn(key) {
    for (const k in V().layouts) for (const n of V().layouts[k].nodes) if (n.key === key) return n;
    return null;
  }

  function statsRows(table, s, i) {
    const name = i ? "value " + i : "value";
    row(table, name, s.dtype + "[" + s.shape.join("×") + "]");
    if (s.mean === undefined) return;
    row(table, "mean ± std", fmt(s.mean) + " ± " + fmt(s.std));
    row(table, "min … max", fmt(s.min) + " … " + fmt(s.max));
    if (s.nonfinite) row(table, "non-finite", String(s.nonfinite));
    const td = row(table, "histogram", "");
    const h = sv("svg", { class: "hist", width: 200, height: 40 }, td);
    const top = Math.max(...s.hist, 1);
    s.hist.forEach((c, j) => sv("rect", { x: j * (200 / s.hist.length), y: 40 - 38 * c / top,
                                          width: 200 / s.hist.length - 1, height: 38 * c / top }, h));
  }

  // ---- search ---------------------------------------------------------------------
  function find(q) {
    q = q.trim().toLowerCase();
    if (!q) return [];
    const out = [];
    const view = V();
    for (const k in view.layouts)
      if (k && (k.toLowerCase().includes(q) || view.layouts[k].title.toLowerCase().includes(q)))
        out.push({ key: "scope:" + k, text: k + " — block" });
    for (const k in view.nodes) {
      const f = view.nodes[k];
      if (k.toLowerCase().includes(q) || f.op.toLowerCase() === q) out.push({ key: k, text: k + " — " + f.op });
      if (out.length >= 200) return out;
    }
    for (const k in view.folded) {
      const f = view.nodes[view.folded[k]];
      if (f && (k.toLowerCase().includes(q) || f.op.toLowerCase() === q))
        out.push({ key: view.folded[k], copy: k, text: k + " — " + f.op + " (folded)" });
      if (out.length >= 200) break;
    }
    return out;
  }
  function showResults() {
    results.textContent = "";
    for (const r of find(search.value).slice(0, 100)) {
      const li = el("li", {}, results, r.text);
      li.dataset.key = r.key;
      li.addEventListener("click", () => reveal(r.key, r.copy));
    }
  }
  search.addEventListener("input", showResults);
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { const r = find(search.value)[0]; if (r) reveal(r.key, r.copy); }
  });

  // Open every scope around ``key`` so that it is drawn, select it, and centre on it.
  function reveal(key, copy) {
    const scope = scopeOfKey(key);
    const view = V();
    if (scope) {
      const parts = scope.split("/");
      const upto = key.startsWith("scope:") ? parts.length - 1 : parts.length;
      for (let i = 1; i <= upto; i++) {
        const p = parts.slice(0, i).join("/");
        if (view.layouts[p]) state.open[state.view].add(p);
      }
    }
    render();
    select(key, copy);
    centerOn(key);
  }

  // ---- attention heatmaps ---------------------------------------------------------
  const layerSel = el("select", { id: "layer-select", title: "layer" });
  const headSel = el("select", { id: "head-select", title: "head" });
  const heatBox = el("div", {});
  function setupAttention() {
    attn.textContent = "";
    const pats = V().attention || [];
    attnHead.style.display = attn.style.display = pats.length ? "" : "none";
    if (!pats.length) return;
    const ctl = el("div", {}, attn);
    el("span", {}, ctl, "layer ");
    ctl.appendChild(layerSel);
    el("span", {}, ctl, " head ");
    ctl.appendChild(headSel);
    attn.appendChild(heatBox);
    layerSel.textContent = "";
    for (const l of [...new Set(pats.map((p) => p.layer))]) el("option", { value: l }, layerSel, l);
    fillHeads();
  }
  function fillHeads() {
    const pats = V().attention;
    headSel.textContent = "";
    pats.forEach((p, i) => { if (p.layer === layerSel.value) el("option", { value: String(i) }, headSel, String(p.head)); });
    drawPattern(Number(headSel.value));
  }
  layerSel.addEventListener("change", fillHeads);
  headSel.addEventListener("change", () => drawPattern(Number(headSel.value)));
  function showPattern(i) {
    const p = V().attention[i];
    layerSel.value = p.layer;
    fillHeads();
    headSel.value = String(i);
    drawPattern(i);
  }

  function drawPattern(i) {
    const p = V().attention[i];
    heatBox.textContent = "";
    const T = p.weights.length, S = p.weights[0].length;
    const cell = Math.max(4, Math.min(18, Math.floor(300 / Math.max(T, S))));
    const m = 26;
    const h = sv("svg", { id: "heatmap", width: m + S * cell + 2, height: m + T * cell + 2 }, heatBox);
    h.dataset.node = p.node;
    p.keys.forEach((t, j) => { if (cell >= 8) sv("text", { x: m + j * cell + cell / 2, y: m - 4, "text-anchor": "middle" }, h, t); });
    p.queries.forEach((t, r) => { if (cell >= 8) sv("text", { x: m - 4, y: m + r * cell + cell * 0.75, "text-anchor": "end" }, h, t); });
    for (let r = 0; r < T; r++)
      for (let c = 0; c < S; c++) {
        const v = p.weights[r][c];
        const shade = Math.round(255 * (1 - Math.sqrt(Math.min(Math.max(v, 0), 1))));
        const rect = sv("rect", { class: "cell", x: m + c * cell, y: m + r * cell, width: cell, height: cell,
                                  fill: "rgb(" + shade + "," + shade + ",255)" }, h);
        rect.dataset.q = r;
        rect.dataset.k = c;
        rect.dataset.v = v;
        sv("title", {}, rect, "query " + r + " '" + p.queries[r] + "' → key " + c + " '" + p.keys[c] + "': " + v.toFixed(4));
      }
    el("div", { class: "muted" }, heatBox, p.node + " (rows: queries, columns: keys; darker = more weight)");
  }

  // ---- views ----------------------------------------------------------------------
  function showView(i) {
    state.view = i;
    state.selected = null;
    viewSel.value = String(i);
    source.textContent = V().source ? "values: " + V().source : "";
    info.textContent = "";
    svg.classList.remove("dim");
    results.textContent = "";
    render();
    fit();
    setupAttention();
  }
  viewSel.addEventListener("change", () => showView(Number(viewSel.value)));
  fitBtn.addEventListener("click", fit);
  openAllBtn.addEventListener("click", () => { for (const k in V().layouts) if (k) state.open[state.view].add(k); render(); fit(); });
  closeAllBtn.addEventListener("click", () => { state.open[state.view].clear(); render(); fit(); });

  // A small API for scripts and tests: the same functions the page's controls call.
  window.tgraphViewer = { state, render, expand, collapse, select, reveal, find, showView, fit,
                          drawn: () => drawn, visibleKeys: () => Array.from(elements.keys()) };
  showView(0);
})();
