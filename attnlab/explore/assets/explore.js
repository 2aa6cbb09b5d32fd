// attnlab explore: draws the attention of one query token over the image, for every model side by side.
// Every block has its own geometry (a patch grid, Swin windows, MViTv2's pooled grids): a point of the image
// picks the query whose cell holds it, and the query's keys are drawn as their cells, where they are in the image.
// Data (JSON in #attnlab-data, binary arrays as base64, decoded once on first use) — see attnlab/explore/page.py.
// Every string from the data goes into the page through textContent, never as markup.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("attnlab-data").textContent);
  const DISPLAY = 320;  // CSS pixels of a panel's long side
  const CHART_W = 320, CHART_H = 110;

  // ------------------------------------------------------------------ decoding (once per array)
  const cache = new Map();
  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function u8(key, b64) {
    if (!cache.has(key)) cache.set(key, bytes(b64));
    return cache.get(key);
  }
  function f32(key, b64) {
    if (!cache.has(key)) cache.set(key, new Float32Array(bytes(b64).buffer));
    return cache.get(key);
  }
  const LUT = bytes(DATA.lut);              // 256 x RGB
  const COLOR = new Uint32Array(256);       // RGBA packed little-endian, alpha = intensity
  for (let v = 0; v < 256; v++) {
    COLOR[v] = ((v << 24) | (LUT[3 * v + 2] << 16) | (LUT[3 * v + 1] << 8) | LUT[3 * v]) >>> 0;
  }

  // ------------------------------------------------------------------ state
  const models = DATA.models;
  const maxSteps = Math.max(...models.map(m => m.layers.length));
  const maxHeads = Math.max(...models.map(m => m.heads));  // the most heads of any block
  const state = {
    image: 0, step: 0, head: -1, kind: "applied", overlay: "attention", grid: true,
    query: { kind: "patch", y: 0.5, x: 0.5 }, hover: null, ref: 0,
  };
  const explorer = { state: state, ready: false, renders: 0, lastRenderMs: 0 };
  window.attnlabExplorer = explorer;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(v, digits) { return Number.isFinite(v) ? v.toFixed(digits) : "–"; }
  function pct(v) { return Number.isFinite(v) ? (100 * v).toFixed(1) + "%" : "–"; }

  // ------------------------------------------------------------------ per layer: where its queries and keys are drawn
  function upper(sorted, v) {  // number of entries <= v
    let lo = 0, hi = sorted.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (sorted[mid] <= v) lo = mid + 1; else hi = mid; }
    return lo;
  }
  function shapeOf(m, l) {  // the geometry of block l, with its query lookup built on first use
    const S = m.shapes[m.blocks[l].shape];
    if (S._) return S;
    const qc = new Int16Array(bytes(S.query_cells).buffer), kc = new Int16Array(bytes(S.key_cells).buffer);
    const R = S.windows * S.queries, ys = new Set(), xs = new Set();
    let yEnd = 0, xEnd = 0;
    for (let r = 0; r < R; r++) {
      const b = 4 * r;
      if (qc[b + 2] <= 0 || qc[b + 3] <= 0) continue;
      ys.add(qc[b]); xs.add(qc[b + 1]);
      yEnd = Math.max(yEnd, qc[b] + qc[b + 2]); xEnd = Math.max(xEnd, qc[b + 1] + qc[b + 3]);
    }
    const Y = [...ys].sort((a, b) => a - b), X = [...xs].sort((a, b) => a - b);
    const yi = new Map(Y.map((v, i) => [v, i])), xi = new Map(X.map((v, i) => [v, i]));
    const map = new Int32Array(Y.length * X.length).fill(-1);
    for (let r = 0; r < R; r++) {
      const b = 4 * r;
      if (qc[b + 2] > 0 && qc[b + 3] > 0) map[yi.get(qc[b]) * X.length + xi.get(qc[b + 1])] = r;
    }
    S._ = { qc: qc, kc: kc, rows: R, Y: Y, X: X, yEnd: yEnd, xEnd: xEnd, map: map, yi: yi, xi: xi };
    return S;
  }
  function queryAt(S, py, px) {  // the query row whose cell holds pixel (py, px), or -1
    const g = S._, r = upper(g.Y, py) - 1, c = upper(g.X, px) - 1;
    if (r < 0 || c < 0) return -1;
    const row = g.map[r * g.X.length + c], b = 4 * row;
    if (row < 0 || py >= g.qc[b] + g.qc[b + 2] || px >= g.qc[b + 1] + g.qc[b + 3]) return -1;
    return row;
  }
  function cellOf(S, row) {  // [y0, x0, h, w] of a query row (h = w = 0: no position)
    const b = 4 * row, qc = S._.qc;
    return [qc[b], qc[b + 1], qc[b + 2], qc[b + 3]];
  }
  function tokenOf(m, l, q) {  // query row of q in block l of model m, or -1 when it has none
    const S = shapeOf(m, l);
    if (q.kind === "prefix") return q.index < S.prefix_queries ? q.index : -1;
    if (S._.Y.length === 0) return 0;  // class attention: only the class token queries
    return queryAt(S, q.y * m.size[0], q.x * m.size[1]);
  }
  function headOf(m, l) {  // index heads = the mean over heads
    const H = m.blocks[l].heads;
    return state.head >= 0 && state.head < H ? state.head : H;
  }
  function view(m) {
    const k = Math.min(state.step, m.layers.length - 1), l = m.layers[k];
    const kind = m.sources.includes(state.kind) ? state.kind : "applied";
    const q = state.hover || state.query, S = shapeOf(m, l);
    return { k: k, block: l, B: m.blocks[l], S: S, head: headOf(m, l), kind: kind, token: tokenOf(m, l, q), q: q,
      onlyClass: S._.Y.length === 0 && q.kind === "patch" };
  }

  // ------------------------------------------------------------------ overlay (native resolution)
  function fillKeys(p, S, w, values, offset) {  // key j of window w: its cell filled with values[offset + j - P]
    const kc = S._.kc, W = p.model.size[1], px = p.pixels, K = S.keys, P = S.prefix_keys;
    for (let j = P; j < K; j++) {
      const b = 4 * (w * K + j), y0 = kc[b], x0 = kc[b + 1], h = kc[b + 2], wd = kc[b + 3];
      if (h <= 0 || wd <= 0) continue;
      const color = COLOR[values[offset + j - P]];
      for (let y = y0, end = y0 + h; y < end; y++) px.fill(color, y * W + x0, y * W + x0 + wd);
    }
  }
  function drawOverlay(p, v) {
    const m = p.model, n = state.image, S = v.S, G = S.keys - S.prefix_keys, H1 = v.B.heads + 1;
    p.pixels.fill(0);
    if (state.overlay === "attention" && v.token >= 0) {
      const rows = u8(`${p.index}/${v.kind}/${v.k}/q`, m.rows[v.kind][v.k].q);
      fillKeys(p, S, Math.floor(v.token / S.queries), rows, ((n * H1 + v.head) * S._.rows + v.token) * G);
    } else if (state.overlay === "rollout" && m.rollout) {
      const S0 = m.shapes[m.rollout_shape];
      fillKeys(p, S0, 0, u8(`${p.index}/rollout`, m.rollout), n * (S0.keys - S0.prefix_keys));
    } else if (state.overlay === "gradcam" && m.gradcam) {
      const cam = u8(`${p.index}/gradcam`, m.gradcam), size = m.size[0] * m.size[1], px = p.pixels;
      for (let i = 0; i < size; i++) px[i] = COLOR[cam[n * size + i]];
    }
    p.ctx.putImageData(p.image, 0, 0);
  }
  function outlineWindow(p, v, sx, sy) {  // the edges of the query's window keys (Swin): where the keys are
    const S = v.S, kc = S._.kc, K = S.keys, w = Math.floor(v.token / S.queries), ctx = p.gridCtx, cellsAt = new Set();
    for (let j = S.prefix_keys; j < K; j++) { const b = 4 * (w * K + j); if (kc[b + 2] > 0) cellsAt.add(kc[b] + "," + kc[b + 1]); }
    ctx.strokeStyle = "#a3e635";
    ctx.lineWidth = 2;
    ctx.beginPath();
    for (let j = S.prefix_keys; j < K; j++) {
      const b = 4 * (w * K + j), y0 = kc[b], x0 = kc[b + 1], h = kc[b + 2], wd = kc[b + 3];
      if (h <= 0 || wd <= 0) continue;
      const X0 = x0 * sx, Y0 = y0 * sy, X1 = (x0 + wd) * sx, Y1 = (y0 + h) * sy;
      if (!cellsAt.has((y0 - h) + "," + x0)) { ctx.moveTo(X0, Y0 + 1); ctx.lineTo(X1, Y0 + 1); }
      if (!cellsAt.has((y0 + h) + "," + x0)) { ctx.moveTo(X0, Y1 - 1); ctx.lineTo(X1, Y1 - 1); }
      if (!cellsAt.has(y0 + "," + (x0 - wd))) { ctx.moveTo(X0 + 1, Y0); ctx.lineTo(X0 + 1, Y1); }
      if (!cellsAt.has(y0 + "," + (x0 + wd))) { ctx.moveTo(X1 - 1, Y0); ctx.lineTo(X1 - 1, Y1); }
    }
    ctx.stroke();
  }
  function drawGrid(p, v) {
    const m = p.model, ctx = p.gridCtx, g = v.S._;
    const sx = p.width / m.size[1], sy = p.height / m.size[0];
    ctx.clearRect(0, 0, p.width, p.height);
    if (state.grid && g.Y.length) {  // the query cells of the selected block
      const y0 = g.Y[0] * sy, y1 = g.yEnd * sy, x0 = g.X[0] * sx, x1 = g.xEnd * sx;
      ctx.strokeStyle = "rgba(255,255,255,0.25)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (const c of g.X.concat([g.xEnd])) { const x = Math.round(c * sx) + 0.5; ctx.moveTo(x, y0); ctx.lineTo(x, y1); }
      for (const r of g.Y.concat([g.yEnd])) { const y = Math.round(r * sy) + 0.5; ctx.moveTo(x0, y); ctx.lineTo(x1, y); }
      ctx.stroke();
    }
    if (state.overlay !== "attention" || v.token < 0) return;
    if (v.B.geometry === "window") outlineWindow(p, v, sx, sy);
    const [cy, cx, ch, cw] = cellOf(v.S, v.token);
    if (ch > 0 && cw > 0) {
      ctx.strokeStyle = "#38bdf8";
      ctx.lineWidth = 2;
      ctx.strokeRect(cx * sx + 1, cy * sy + 1, cw * sx - 2, ch * sy - 2);
    }
  }

  // ------------------------------------------------------------------ numbers beside the image
  function metricsOf(p, v) {  // per block: the metrics of the query token that block has at the selected point
    const m = p.model, n = state.image, out = { qmad: [], qent: [], imad: [], ient: [], umad: [], uimad: [], uent: [] };
    for (let l = 0; l < m.depth; l++) {
      const S = shapeOf(m, l), H1 = m.blocks[l].heads + 1, h = headOf(m, l), src = m.metrics[v.kind][l];
      const key = `${p.index}/${v.kind}/${l}`, t = tokenOf(m, l, v.q), s = m.blocks[l].shape, R = S._.rows;
      const qm = f32(key + "/qm", src.query_mad), qe = f32(key + "/qe", src.query_entropy);
      const im = f32(key + "/im", src.image_mad), ie = f32(key + "/ie", src.image_entropy);
      const um = f32(`${p.index}/u${s}/m`, S.uniform.query_mad);
      out.imad.push(im[n * H1 + h]);
      out.ient.push(ie[n * H1 + h]);
      out.qmad.push(t >= 0 ? qm[(n * H1 + h) * R + t] : NaN);
      out.qent.push(t >= 0 ? qe[(n * H1 + h) * R + t] : NaN);
      out.umad.push(t >= 0 ? um[t] : NaN);
      out.uimad.push(S.uniform.image_mad === null ? NaN : S.uniform.image_mad);
      out.uent.push(S.uniform.image_entropy);
    }
    return out;
  }
  function setValue(span, value, digits, unit) {
    span.textContent = fmt(value, digits) + (unit && Number.isFinite(value) ? " " + unit : "");
    span.dataset.value = Number.isFinite(value) ? String(value) : "";
  }
  function queryText(m, v) {
    if (v.token < 0) return "query: –";
    if (v.token < v.S.prefix_queries) return `query: ${m.prefix_names[v.token] || "prefix"} token`;
    const g = v.S._, [y0, x0] = cellOf(v.S, v.token), r = g.yi.get(y0), c = g.xi.get(x0);
    const what = v.B.geometry === "grid" ? "patch" : "token";
    const win = v.S.windows > 1 ? `, window ${Math.floor(v.token / v.S.queries)}` : "";
    return `query: ${what} (row ${r}, col ${c}) of ${g.Y.length}x${g.X.length}${win}`;
  }
  function drawReadout(p, v, mt) {
    const m = p.model, R = p.readout, n = state.image, S = v.S, H1 = v.B.heads + 1, G = S.keys - S.prefix_keys;
    const headText = v.head === v.B.heads ? "mean over heads" : `head ${v.head}`;
    R.where.textContent = `block ${v.block} · ${headText} · ${v.kind} attention`;
    R.about.textContent = `${v.B.name}: ${v.B.about}, ${v.B.heads} head${v.B.heads === 1 ? "" : "s"}` + (v.B.note ? ` (${v.B.note})` : "");
    const notes = [];
    if (state.head >= v.B.heads) notes.push(`block ${v.block} has ${v.B.heads} heads: showing the mean`);
    if (state.kind === "own" && v.kind !== "own") notes.push("own attention is ReViT's: showing the applied");
    if (state.step >= m.layers.length) notes.push(`only ${m.layers.length} stored blocks`);
    if (v.token < 0 && v.q.kind === "prefix") notes.push(`no ${m.prefix_names[v.q.index] || "prefix"} token query in block ${v.block}`);
    else if (v.token < 0) notes.push("no query of this block at that point");
    if (v.onlyClass) notes.push("class attention: only the class token queries; showing its row");
    if (state.overlay !== "attention" && state.overlay !== "none" && !m[state.overlay]) notes.push(m.missing[state.overlay]);
    R.note.textContent = notes.join("; ");
    R.query.textContent = queryText(m, v);
    const b = v.block;
    setValue(R.qmad, mt.qmad[b], 1, "px"); setValue(R.imad, mt.imad[b], 1, "px");
    setValue(R.umad, mt.umad[b], 1, "px"); setValue(R.uimad, mt.uimad[b], 1, "px");
    setValue(R.qent, mt.qent[b], 3, ""); setValue(R.ient, mt.ient[b], 3, "");
    setValue(R.uent, mt.uent[b], 3, "nats");
    if (v.token >= 0) {
      const row = (n * H1 + v.head) * S._.rows + v.token, P = S.prefix_keys;
      const scale = f32(`${p.index}/${v.kind}/${v.k}/s`, m.rows[v.kind][v.k].scale)[row];
      const pre = f32(`${p.index}/${v.kind}/${v.k}/p`, m.rows[v.kind][v.k].prefix);
      const parts = [];
      let prefixMass = 0;
      for (let j = 0; j < P; j++) { const a = pre[row * P + j]; prefixMass += a; parts.push(`${pct(a)} on ${m.prefix_names[j] || "prefix " + j}`); }
      const keys = v.B.geometry === "window" ? `${G} keys of its window` : v.B.geometry === "pooled" ? `${G} pooled keys` : `${G} patches`;
      parts.push(`${pct(1 - prefixMass)} on the ${keys} (brightest ${pct(255 * scale)})`);
      R.mass.textContent = "its attention: " + parts.join(", ");
    } else R.mass.textContent = "";
    const pred = m.predictions[n];
    R.pred.textContent = `predicted: ${pred.class} (p = ${pred.p.toFixed(3)})`;
    R.map.textContent = state.overlay === "rollout" && m.rollout ? `overlay: attention rollout of the ${m.rollout_of} over all ${m.depth} blocks`
      : state.overlay === "gradcam" && m.gradcam ? `overlay: GradCAM of the predicted class at ${m.cam_layer}` : "";
  }
  function drawChart(p, canvas, series, v, unit) {
    const ctx = canvas.getContext("2d"), m = p.model, L = m.depth;
    const left = 34, right = 8, top = 14, bottom = 18, w = CHART_W - left - right, h = CHART_H - top - bottom;
    ctx.clearRect(0, 0, CHART_W, CHART_H);
    const finite = series.flatMap(s => s.values).filter(Number.isFinite);
    const ymax = Math.max(1e-9, ...finite) * 1.08;
    const X = l => left + (L === 1 ? w / 2 : (l * w) / (L - 1)), Y = val => top + h - (val / ymax) * h;
    ctx.font = "10px sans-serif";
    ctx.fillStyle = "#6b6b70";
    ctx.strokeStyle = "#d8d8de";
    ctx.lineWidth = 1;
    ctx.strokeRect(left, top, w, h);
    ctx.fillText(`${series[0].title} (${unit})`, left, 10);
    ctx.fillText(fmt(ymax, ymax < 10 ? 2 : 0), 2, top + 8);
    ctx.fillText("0", 2, top + h);
    for (const l of m.layers) { ctx.fillText(String(l), X(l) - 3, CHART_H - 4); }
    ctx.strokeStyle = "#9ca3af";
    ctx.beginPath(); ctx.moveTo(X(v.block) + 0.5, top); ctx.lineTo(X(v.block) + 0.5, top + h); ctx.stroke();
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.dash ? 1 : 2;
      ctx.setLineDash(s.dash ? [4, 3] : []);
      ctx.beginPath();
      let open = false;
      s.values.forEach((val, l) => {
        if (!Number.isFinite(val)) { open = false; return; }
        if (open) ctx.lineTo(X(l), Y(val)); else { ctx.moveTo(X(l), Y(val)); open = true; }
      });
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }
  function drawCharts(p, v, mt) {
    const Q = "#1f6feb", I = "#b45309";
    drawChart(p, p.madChart, [
      { title: "mean attention distance", values: mt.qmad, color: Q }, { values: mt.imad, color: I },
      { values: mt.umad, color: Q, dash: true }, { values: mt.uimad, color: I, dash: true },
    ], v, "px");
    drawChart(p, p.entChart, [
      { title: "entropy", values: mt.qent, color: Q }, { values: mt.ient, color: I },
      { values: mt.uent, color: "#6b6b70", dash: true },
    ], v, "nats");
  }

  // ------------------------------------------------------------------ rendering
  let pending = false;
  function render() {
    const t0 = performance.now();
    const pic = DATA.pictures;
    for (const p of panels) {
      const v = view(p.model);
      const src = "data:image/png;base64," + pic[p.model.picture].png[state.image];
      if (p.photo.dataset.image !== String(state.image)) { p.photo.src = src; p.photo.dataset.image = String(state.image); }
      drawOverlay(p, v);
      drawGrid(p, v);
      const mt = metricsOf(p, v);
      drawReadout(p, v, mt);
      drawCharts(p, v, mt);
      p.prefixButtons.forEach((b, j) => b.setAttribute("aria-pressed", String(v.token === j)));
      p.section.dataset.block = String(v.block);
      p.section.dataset.head = String(v.head);
      p.section.dataset.kind = v.kind;
      p.section.dataset.token = String(v.token);
    }
    drawControls();
    explorer.renders++;
    explorer.lastRenderMs = performance.now() - t0;
  }
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  }
  explorer.render = render;

  // ------------------------------------------------------------------ controls
  const ctl = {};
  function button(parent, text, onClick, attrs) {
    const b = el("button", Object.assign({ type: "button" }, attrs || {}), text);
    b.addEventListener("click", onClick);
    parent.appendChild(b);
    return b;
  }
  function buildControls() {
    const bar = document.getElementById("controls");
    const layer = el("span", { class: "group" });
    layer.appendChild(el("span", {}, "block"));
    ctl.prev = button(layer, "◀", () => step(-1), { id: "layer-prev", title: "previous block (PageUp or [)" });
    ctl.layer = el("span", { id: "layer-label" });
    layer.appendChild(ctl.layer);
    ctl.next = button(layer, "▶", () => step(1), { id: "layer-next", title: "next block (PageDown or ])" });
    bar.appendChild(layer);

    const head = el("label", {}, "head ");
    ctl.head = el("select", { id: "head" });
    ctl.head.appendChild(el("option", { value: "-1" }, "mean over heads"));
    for (let h = 0; h < maxHeads; h++) ctl.head.appendChild(el("option", { value: String(h) }, `head ${h}`));
    ctl.head.addEventListener("change", () => { state.head = Number(ctl.head.value); render(); });
    head.appendChild(ctl.head);
    bar.appendChild(head);

    const kinds = el("span", { class: "group" });
    kinds.appendChild(el("span", {}, "attention"));
    const revit = models.some(m => m.sources.includes("own"));
    ctl.kinds = ["applied", "own"].map(k => button(kinds, k, () => { state.kind = k; render(); },
      { id: `kind-${k}`, title: k === "own" ? "ReViT: softmax of the block's own logits S_l" : "what the block applies" }));
    if (!revit) ctl.kinds[1].disabled = true;
    bar.appendChild(kinds);

    const overlay = el("span", { class: "group" });
    overlay.appendChild(el("span", {}, "overlay"));
    ctl.overlays = ["attention", "rollout", "gradcam", "none"].map(o =>
      button(overlay, o, () => { state.overlay = o; render(); }, { id: `overlay-${o}` }));
    bar.appendChild(overlay);

    const grid = el("label", {});
    ctl.grid = el("input", { type: "checkbox", id: "show-grid" });
    ctl.grid.checked = true;
    ctl.grid.addEventListener("change", () => { state.grid = ctl.grid.checked; render(); });
    grid.appendChild(ctl.grid);
    grid.appendChild(document.createTextNode(" grid"));
    bar.appendChild(grid);
    bar.appendChild(el("span", { class: "hint" },
      "hover or click a patch (a token of the shown block: windows and pooled grids in image coordinates) · arrows move the query · PageUp/PageDown or [ ] step blocks · h next head"));

    const thumbs = document.getElementById("thumbs");
    ctl.thumbs = DATA.images.map((im, i) => {
      const b = button(thumbs, undefined, () => { state.image = i; render(); }, { "data-image": String(i), title: im.name });
      const img = el("img", { alt: `image ${i}` });
      img.src = "data:image/png;base64," + DATA.pictures[models[0].picture].png[i];
      b.appendChild(img);
      return b;
    });
    ctl.info = document.getElementById("image-info");
  }
  function drawControls() {
    const m = models[state.ref] || models[0];
    ctl.layer.textContent = ` ${m.layers[Math.min(state.step, m.layers.length - 1)]} (${state.step + 1} of ${maxSteps}) `;
    ctl.prev.disabled = state.step === 0;
    ctl.next.disabled = state.step >= maxSteps - 1;
    ctl.head.value = String(state.head);
    ctl.kinds.forEach(b => b.setAttribute("aria-pressed", String(b.textContent === state.kind)));
    ctl.overlays.forEach(b => b.setAttribute("aria-pressed", String(b.textContent === state.overlay)));
    ctl.thumbs.forEach((b, i) => b.setAttribute("aria-pressed", String(i === state.image)));
    const im = DATA.images[state.image];
    ctl.info.textContent = `image ${state.image + 1} of ${DATA.images.length}: ${im.name}` + (im.label !== null ? ` · label: ${im.label}` : "");
  }
  function step(delta) {
    state.step = Math.max(0, Math.min(maxSteps - 1, state.step + delta));
    render();
  }

  // ------------------------------------------------------------------ panels
  const panels = [];
  function patchAt(p, event) {  // the image point under the mouse (fractions), or null where the block has no query
    const m = p.model, rect = p.gridCanvas.getBoundingClientRect();
    const clamp = v => Math.max(0, Math.min(1 - 1e-9, v));
    const q = { kind: "patch", y: clamp((event.clientY - rect.top) / rect.height), x: clamp((event.clientX - rect.left) / rect.width) };
    return tokenOf(m, view(m).block, q) < 0 ? null : q;
  }
  function buildPanel(m, index) {
    const [H, W] = m.size, scale = DISPLAY / Math.max(H, W), width = Math.round(W * scale), height = Math.round(H * scale);
    const section = el("section", { class: "panel", "data-model": String(index) });
    section.appendChild(el("h2", {}, m.label));
    const heads = [...new Set(m.blocks.map(b => b.heads))], headText = heads.length > 1 ? `${Math.min(...heads)}–${Math.max(...heads)}` : heads[0];
    section.appendChild(el("div", { class: "meta" }, `${m.arch} · ${m.checkpoint} · ${m.about}, ${headText} head${headText === 1 ? "" : "s"}, ${m.depth} blocks`));
    const stage = el("div", { class: "stage" });
    stage.style.width = width + "px";
    stage.style.height = height + "px";
    const photo = el("img", { class: "photo", alt: "" });
    const overlay = el("canvas", { class: "overlay", width: String(W), height: String(H) });
    const gridCanvas = el("canvas", { class: "grid", width: String(width), height: String(height), tabindex: "0" });
    stage.append(photo, overlay, gridCanvas);
    section.appendChild(stage);
    const prefix = el("div", { class: "prefix" });
    const prefixButtons = [];
    if (m.prefix_names.length > 0) {
      prefix.appendChild(el("span", { class: "hint" }, "query a prefix token:"));
      m.prefix_names.forEach((name, j) => prefixButtons.push(button(prefix, name, () => {
        state.query = { kind: "prefix", index: j }; state.hover = null; state.ref = index; render();
      }, { "data-prefix": String(j) })));
    }
    section.appendChild(prefix);
    const readout = el("div", { class: "readout" });
    const line = (parts) => {
      const div = el("div");
      const spans = {};
      for (const part of parts) {
        if (typeof part === "string") div.appendChild(document.createTextNode(part));
        else { spans[part[0]] = el("span", { "data-metric": part[0] }); div.appendChild(spans[part[0]]); }
      }
      readout.appendChild(div);
      return spans;
    };
    const R = {};
    for (const name of ["where", "about", "query", "note", "mass", "pred", "map"]) {
      R[name] = el("div", name === "note" ? { class: "note" } : {});
      readout.appendChild(R[name]);
    }
    Object.assign(R, line(["distance: query ", ["qmad"], " · image ", ["imad"], " · uniform ", ["umad"], " / ", ["uimad"]]));
    Object.assign(R, line(["entropy: query ", ["qent"], " · image ", ["ient"], " · uniform ", ["uent"]]));
    section.appendChild(readout);
    const madChart = el("canvas", { class: "chart", width: String(CHART_W), height: String(CHART_H), "data-chart": "mad" });
    const entChart = el("canvas", { class: "chart", width: String(CHART_W), height: String(CHART_H), "data-chart": "entropy" });
    section.append(madChart, entChart);
    const legend = el("div", { class: "legend" });
    legend.append(el("span", { class: "q" }, "— selected query"), document.createTextNode("  "),
      el("span", { class: "i" }, "— whole image (mean over queries)"), document.createTextNode("  - - uniform attention"));
    section.appendChild(legend);
    document.getElementById("panels").appendChild(section);
    const ctx = overlay.getContext("2d");
    const image = ctx.createImageData(W, H);
    const p = {
      model: m, index: index, section: section, photo: photo, overlay: overlay, ctx: ctx, image: image,
      pixels: new Uint32Array(image.data.buffer), gridCanvas: gridCanvas, gridCtx: gridCanvas.getContext("2d"),
      width: width, height: height, readout: R, madChart: madChart, entChart: entChart, prefixButtons: prefixButtons,
    };
    gridCanvas.addEventListener("mousemove", e => { state.hover = patchAt(p, e); state.ref = index; schedule(); });
    gridCanvas.addEventListener("mouseleave", () => { state.hover = null; schedule(); });
    gridCanvas.addEventListener("click", e => {
      const q = patchAt(p, e);
      if (q) { state.query = q; state.hover = null; state.ref = index; render(); }
    });
    return p;
  }

  // ------------------------------------------------------------------ keyboard
  function moveQuery(dr, dc) {  // one query cell of the reference model's block (or its first block with patch queries)
    const m = models[state.ref] || models[0];
    let l = view(m).block;
    if (shapeOf(m, l)._.Y.length === 0) l = m.blocks.findIndex((b, i) => shapeOf(m, i)._.Y.length > 0);
    if (l < 0) return;
    const S = shapeOf(m, l), g = S._, q = state.query;
    const row = q.kind === "patch" ? queryAt(S, q.y * m.size[0], q.x * m.size[1]) : -1;
    let r = 0, c = 0;
    if (row >= 0) {
      const [y0, x0] = cellOf(S, row);
      r = Math.max(0, Math.min(g.Y.length - 1, g.yi.get(y0) + dr));
      c = Math.max(0, Math.min(g.X.length - 1, g.xi.get(x0) + dc));
    }
    const next = g.map[r * g.X.length + c];
    if (next < 0) return;
    const [y0, x0, h, w] = cellOf(S, next);
    state.query = { kind: "patch", y: (y0 + h / 2) / m.size[0], x: (x0 + w / 2) / m.size[1] };
    state.hover = null;
    render();
  }
  document.addEventListener("keydown", e => {
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "SELECT" || tag === "INPUT" || e.altKey || e.ctrlKey || e.metaKey) return;
    const keys = {
      ArrowLeft: () => moveQuery(0, -1), ArrowRight: () => moveQuery(0, 1), ArrowUp: () => moveQuery(-1, 0),
      ArrowDown: () => moveQuery(1, 0), PageUp: () => step(-1), PageDown: () => step(1), "[": () => step(-1),
      "]": () => step(1), h: () => { state.head = state.head + 1 >= maxHeads ? -1 : state.head + 1; render(); },
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });

  buildControls();
  models.forEach((m, i) => panels.push(buildPanel(m, i)));
  render();
  explorer.ready = true;
})();
