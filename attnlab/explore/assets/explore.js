// attnlab explore: draws the attention of one query token over the image, for every model side by side.
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
  const maxHeads = Math.max(...models.map(m => m.heads));
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

  // ------------------------------------------------------------------ per model: which token, block, head
  function tokenOf(m, q) {  // token index of the query in model m, or -1 when it has no such token
    if (q.kind === "prefix") return q.index < m.prefix ? q.index : -1;
    const [gh, gw] = m.grid;
    const r = Math.min(gh - 1, Math.floor(q.y * gh)), c = Math.min(gw - 1, Math.floor(q.x * gw));
    return m.prefix + r * gw + c;
  }
  function view(m) {
    const k = Math.min(state.step, m.layers.length - 1);
    const head = state.head >= 0 && state.head < m.heads ? state.head : m.heads;  // index heads = the mean
    const kind = m.sources.includes(state.kind) ? state.kind : "applied";
    const q = state.hover || state.query;
    return { k: k, block: m.layers[k], head: head, kind: kind, token: tokenOf(m, q), q: q };
  }

  // ------------------------------------------------------------------ overlay (native resolution)
  function fillPatches(p, values, offset) {  // one uint8 per patch -> blocks of ph x pw pixels
    const m = p.model, [gh, gw] = m.grid, [ph, pw] = m.patch, W = m.size[1], px = p.pixels;
    for (let r = 0; r < gh; r++) {
      for (let c = 0; c < gw; c++) {
        const color = COLOR[values[offset + r * gw + c]];
        for (let y = r * ph, end = y + ph; y < end; y++) {
          const start = y * W + c * pw;
          px.fill(color, start, start + pw);
        }
      }
    }
  }
  function drawOverlay(p, v) {
    const m = p.model, n = state.image, N = m.tokens, G = N - m.prefix, H1 = m.heads + 1;
    p.pixels.fill(0);
    if (state.overlay === "attention" && v.token >= 0) {
      const rows = u8(`${p.index}/${v.kind}/q`, m.rows[v.kind].q);
      const row = (((n * m.layers.length + v.k) * H1 + v.head) * N + v.token) * G;
      fillPatches(p, rows, row);
    } else if (state.overlay === "rollout") {
      fillPatches(p, u8(`${p.index}/rollout`, m.rollout), n * G);
    } else if (state.overlay === "gradcam") {
      const cam = u8(`${p.index}/gradcam`, m.gradcam), size = m.size[0] * m.size[1], px = p.pixels;
      for (let i = 0; i < size; i++) px[i] = COLOR[cam[n * size + i]];
    }
    p.ctx.putImageData(p.image, 0, 0);
  }
  function drawGrid(p, v) {
    const m = p.model, ctx = p.gridCtx, [gh, gw] = m.grid, [ph, pw] = m.patch;
    const sx = p.width / m.size[1], sy = p.height / m.size[0];
    ctx.clearRect(0, 0, p.width, p.height);
    if (state.grid) {
      ctx.strokeStyle = "rgba(255,255,255,0.25)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let c = 0; c <= gw; c++) { const x = Math.round(c * pw * sx) + 0.5; ctx.moveTo(x, 0); ctx.lineTo(x, gh * ph * sy); }
      for (let r = 0; r <= gh; r++) { const y = Math.round(r * ph * sy) + 0.5; ctx.moveTo(0, y); ctx.lineTo(gw * pw * sx, y); }
      ctx.stroke();
    }
    if (state.overlay === "attention" && v.token >= m.prefix) {
      const t = v.token - m.prefix, r = Math.floor(t / gw), c = t % gw;
      ctx.strokeStyle = "#38bdf8";
      ctx.lineWidth = 2;
      ctx.strokeRect(c * pw * sx + 1, r * ph * sy + 1, pw * sx - 2, ph * sy - 2);
    }
  }

  // ------------------------------------------------------------------ numbers beside the image
  function metricsOf(p, v) {
    const m = p.model, n = state.image, L = m.depth, H1 = m.heads + 1, N = m.tokens, src = m.metrics[v.kind];
    const qm = f32(`${p.index}/${v.kind}/qm`, src.query_mad), qe = f32(`${p.index}/${v.kind}/qe`, src.query_entropy);
    const im = f32(`${p.index}/${v.kind}/im`, src.image_mad), ie = f32(`${p.index}/${v.kind}/ie`, src.image_entropy);
    const um = f32(`${p.index}/um`, m.uniform.query_mad);
    const out = { qmad: [], qent: [], imad: [], ient: [] };
    for (let l = 0; l < L; l++) {
      const base = (n * L + l) * H1 + v.head;
      out.imad.push(im[base]);
      out.ient.push(ie[base]);
      out.qmad.push(v.token >= 0 ? qm[base * N + v.token] : NaN);
      out.qent.push(v.token >= 0 ? qe[base * N + v.token] : NaN);
    }
    out.umad = v.token >= 0 ? um[v.token] : NaN;
    return out;
  }
  function setValue(span, value, digits, unit) {
    span.textContent = fmt(value, digits) + (unit && Number.isFinite(value) ? " " + unit : "");
    span.dataset.value = Number.isFinite(value) ? String(value) : "";
  }
  function drawReadout(p, v, mt) {
    const m = p.model, R = p.readout, n = state.image, H1 = m.heads + 1, N = m.tokens, G = N - m.prefix;
    const headText = v.head === m.heads ? "mean over heads" : `head ${v.head}`;
    R.where.textContent = `block ${v.block} · ${headText} · ${v.kind} attention`;
    const notes = [];
    if (state.head >= m.heads) notes.push(`${m.label} has ${m.heads} heads: showing the mean`);
    if (state.kind === "own" && v.kind !== "own") notes.push("own attention is ReViT's: showing the applied");
    if (state.step >= m.layers.length) notes.push(`only ${m.layers.length} stored blocks`);
    if (v.token < 0) notes.push(`no prefix token ${v.q.index} in this model`);
    R.note.textContent = notes.join("; ");
    if (v.token < 0) R.query.textContent = "query: –";
    else if (v.token < m.prefix) R.query.textContent = `query: ${m.prefix_names[v.token]} token`;
    else { const t = v.token - m.prefix; R.query.textContent = `query: patch (row ${Math.floor(t / m.grid[1])}, col ${t % m.grid[1]})`; }
    const b = v.block;
    setValue(R.qmad, mt.qmad[b], 1, "px"); setValue(R.imad, mt.imad[b], 1, "px");
    setValue(R.umad, mt.umad, 1, "px"); setValue(R.uimad, m.uniform.image_mad, 1, "px");
    setValue(R.qent, mt.qent[b], 3, ""); setValue(R.ient, mt.ient[b], 3, "");
    setValue(R.uent, m.uniform.entropy, 3, "nats");
    if (v.token >= 0) {
      const row = (((n * m.layers.length + v.k) * H1 + v.head) * N + v.token);
      const scale = f32(`${p.index}/${v.kind}/s`, m.rows[v.kind].scale)[row];
      const pre = f32(`${p.index}/${v.kind}/p`, m.rows[v.kind].prefix);
      const parts = [];
      let prefixMass = 0;
      for (let j = 0; j < m.prefix; j++) { const a = pre[row * m.prefix + j]; prefixMass += a; parts.push(`${pct(a)} on ${m.prefix_names[j]}`); }
      parts.push(`${pct(1 - prefixMass)} on the ${G} patches (brightest ${pct(255 * scale)})`);
      R.mass.textContent = "its attention: " + parts.join(", ");
    } else R.mass.textContent = "";
    const pred = m.predictions[n];
    R.pred.textContent = `predicted: ${pred.class} (p = ${pred.p.toFixed(3)})`;
    R.map.textContent = state.overlay === "rollout" ? `overlay: attention rollout of the ${m.rollout_of} over all ${m.depth} blocks`
      : state.overlay === "gradcam" ? `overlay: GradCAM of the predicted class at ${m.cam_layer}` : "";
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
    const L = p.model.depth, flat = x => new Array(L).fill(x), Q = "#1f6feb", I = "#b45309";
    drawChart(p, p.madChart, [
      { title: "mean attention distance", values: mt.qmad, color: Q }, { values: mt.imad, color: I },
      { values: flat(mt.umad), color: Q, dash: true }, { values: flat(p.model.uniform.image_mad), color: I, dash: true },
    ], v, "px");
    drawChart(p, p.entChart, [
      { title: "entropy", values: mt.qent, color: Q }, { values: mt.ient, color: I },
      { values: flat(p.model.uniform.entropy), color: "#6b6b70", dash: true },
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
      "hover or click a patch · arrows move the query · PageUp/PageDown or [ ] step blocks · h next head"));

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
  function patchAt(p, event) {
    const m = p.model, rect = p.gridCanvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * m.size[1], y = ((event.clientY - rect.top) / rect.height) * m.size[0];
    const r = Math.floor(y / m.patch[0]), c = Math.floor(x / m.patch[1]);
    if (r < 0 || c < 0 || r >= m.grid[0] || c >= m.grid[1]) return null;
    return { kind: "patch", y: (r + 0.5) / m.grid[0], x: (c + 0.5) / m.grid[1] };
  }
  function buildPanel(m, index) {
    const [H, W] = m.size, scale = DISPLAY / Math.max(H, W), width = Math.round(W * scale), height = Math.round(H * scale);
    const section = el("section", { class: "panel", "data-model": String(index) });
    section.appendChild(el("h2", {}, m.label));
    section.appendChild(el("div", { class: "meta" }, `${m.arch} · ${m.checkpoint} · ${m.grid[0]}x${m.grid[1]} patches of ${m.patch[0]}x${m.patch[1]} px, ${m.heads} heads, ${m.depth} blocks`));
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
    if (m.prefix > 0) {
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
    for (const name of ["where", "query", "note", "mass", "pred", "map"]) {
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
  function moveQuery(dr, dc) {
    const m = models[state.ref] || models[0], [gh, gw] = m.grid;
    let q = state.query;
    if (q.kind !== "patch") q = { kind: "patch", y: 0.5 / gh, x: 0.5 / gw };
    else {
      const r = Math.max(0, Math.min(gh - 1, Math.floor(q.y * gh) + dr)), c = Math.max(0, Math.min(gw - 1, Math.floor(q.x * gw) + dc));
      q = { kind: "patch", y: (r + 0.5) / gh, x: (c + 0.5) / gw };
    }
    state.query = q;
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
