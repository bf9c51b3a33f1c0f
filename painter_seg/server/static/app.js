// painter_seg browser UI: plain JS over the HTTP API (no build step).
// Images tab: example pairs painted on a canvas (brush / eraser / box, several classes), targets dropped in,
// overlays beside the targets, masks downloaded. Video tab: first frame, mask, propagate, play.
"use strict";

const PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 200, 200], [240, 50, 230], [160, 200, 40], [250, 160, 160], [0, 128, 128], [170, 110, 40]];
const $ = (id) => document.getElementById(id);
let TOKEN = localStorage.getItem("painter_seg_token") || "";

// ------------------------------------------------------------------------------------------ API helpers

function setStatus(msg, isError = false) {
  const el = $("status");
  el.textContent = msg || "";
  el.classList.toggle("error", !!isError);
}

function authUrl(url) {
  return TOKEN ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN) : url;
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
  const resp = await fetch(path, Object.assign({}, opts, { headers }));
  if (resp.status === 401) $("token-box").hidden = false;
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  const type = resp.headers.get("content-type") || "";
  return type.includes("application/json") ? resp.json() : resp.blob();
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("cannot decode image"));
    img.src = src;
  });
}

// ------------------------------------------------------------------------------------------ classes

class ClassList {
  // The classes of one editor: ids 1..n, each with its colour and an editable name.
  constructor(container) {
    this.container = container;
    this.classes = [{ id: 1, name: "object 1" }];
    this.active = 1;
    this.render();
  }
  color(id) { return PALETTE[1 + ((id - 1) % (PALETTE.length - 1))]; }
  names() { const o = {}; this.classes.forEach((c) => { o[c.id] = c.name; }); return o; }
  add() {
    const id = Math.max(...this.classes.map((c) => c.id)) + 1;
    if (id > 255) return;
    this.classes.push({ id, name: "object " + id });
    this.active = id;
    this.render();
  }
  render() {
    this.container.innerHTML = "";
    for (const c of this.classes) {
      const chip = document.createElement("span");
      chip.className = "class-chip" + (c.id === this.active ? " active" : "");
      chip.dataset.id = c.id;
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = "rgb(" + this.color(c.id).join(",") + ")";
      const name = document.createElement("input");
      name.value = c.name;
      name.title = "class " + c.id + " name";
      name.oninput = () => { c.name = name.value; };
      chip.append(sw, name);
      chip.onclick = () => { this.active = c.id; this.render(); };
      this.container.append(chip);
    }
    const add = document.createElement("button");
    add.textContent = "+ class";
    add.className = "add-class";
    add.onclick = () => this.add();
    this.container.append(add);
  }
}

// ------------------------------------------------------------------------------------------ mask editor

class MaskEditor {
  // A label map (Uint8Array, ids at image resolution) painted over an image on two stacked canvases.
  constructor(container, classes, tool, size, boxToMask) {
    [this.imageCanvas, this.maskCanvas] = container.querySelectorAll("canvas");
    this.rectEl = container.querySelector("div");
    this.hint = container.querySelector(".hint");
    this.classes = classes;
    this.tool = tool;        // () -> "brush" | "eraser" | "box"
    this.size = size;        // () -> brush diameter in screen pixels
    this.boxToMask = boxToMask;
    this.labels = null;
    const c = this.maskCanvas;
    c.addEventListener("pointerdown", (e) => this.down(e));
    c.addEventListener("pointermove", (e) => this.move(e));
    window.addEventListener("pointerup", (e) => this.up(e));
  }

  load(img, labels) {
    const w = img.naturalWidth || img.width, h = img.naturalHeight || img.height;
    for (const c of [this.imageCanvas, this.maskCanvas]) { c.width = w; c.height = h; }
    this.imageCanvas.getContext("2d").drawImage(img, 0, 0);
    this.image = img;
    this.labels = labels || new Uint8Array(w * h);
    this.overlay = this.maskCanvas.getContext("2d").createImageData(w, h);
    if (this.hint) this.hint.hidden = true;
    this.render(0, 0, w, h);
  }

  hasMask() { return !!this.labels && this.labels.some((v) => v > 0); }
  clear() { if (this.labels) { this.labels.fill(0); this.render(0, 0, this.maskCanvas.width, this.maskCanvas.height); } }

  render(x0, y0, x1, y1) {
    const w = this.maskCanvas.width, d = this.overlay.data;
    x0 = Math.max(0, Math.floor(x0)); y0 = Math.max(0, Math.floor(y0));
    x1 = Math.min(w, Math.ceil(x1)); y1 = Math.min(this.maskCanvas.height, Math.ceil(y1));
    if (x1 <= x0 || y1 <= y0) return;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const i = y * w + x, id = this.labels[i], j = 4 * i;
        if (id) { const c = this.classes.color(id); d[j] = c[0]; d[j + 1] = c[1]; d[j + 2] = c[2]; d[j + 3] = 255; }
        else d[j + 3] = 0;
      }
    }
    this.maskCanvas.getContext("2d").putImageData(this.overlay, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  point(e) {
    const r = this.maskCanvas.getBoundingClientRect();
    const s = this.maskCanvas.width / r.width;
    return [(e.clientX - r.left) * s, (e.clientY - r.top) * s, s];
  }

  stamp(x, y, radius, id) {
    const w = this.maskCanvas.width, h = this.maskCanvas.height, r2 = radius * radius;
    for (let yy = Math.max(0, Math.floor(y - radius)); yy < Math.min(h, Math.ceil(y + radius)); yy++) {
      for (let xx = Math.max(0, Math.floor(x - radius)); xx < Math.min(w, Math.ceil(x + radius)); xx++) {
        const dx = xx + 0.5 - x, dy = yy + 0.5 - y;
        if (dx * dx + dy * dy <= r2) this.labels[yy * w + xx] = id;
      }
    }
    this.render(x - radius - 1, y - radius - 1, x + radius + 1, y + radius + 1);
  }

  line(p, q) {
    const [x0, y0, s] = p, [x1, y1] = q;
    const radius = Math.max(1, (this.size() * s) / 2);
    const id = this.tool() === "eraser" ? 0 : this.classes.active;
    const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) / Math.max(1, radius / 2)));
    for (let k = 0; k <= steps; k++) this.stamp(x0 + ((x1 - x0) * k) / steps, y0 + ((y1 - y0) * k) / steps, radius, id);
  }

  down(e) {
    if (!this.labels) return;
    e.preventDefault();
    this.drawing = this.point(e);
    if (this.tool() === "box") { this.boxStart = this.drawing; this.showRect(this.drawing, this.drawing); }
    else this.line(this.drawing, this.drawing);
  }

  move(e) {
    if (!this.drawing) return;
    const p = this.point(e);
    if (this.tool() === "box") this.showRect(this.boxStart, p);
    else { this.line(this.drawing, p); this.drawing = p; }
  }

  async up(e) {
    if (!this.drawing) return;
    const p = this.point(e);
    this.drawing = null;
    if (this.tool() !== "box") return;
    this.rectEl.hidden = true;
    const w = this.maskCanvas.width, h = this.maskCanvas.height;
    const box = [Math.min(this.boxStart[0], p[0]), Math.min(this.boxStart[1], p[1]),
      Math.max(this.boxStart[0], p[0]), Math.max(this.boxStart[1], p[1])]
      .map((v, i) => Math.round(Math.min(Math.max(v, 0), i % 2 ? h : w)));
    if (box[2] - box[0] < 3 || box[3] - box[1] < 3) return;
    await this.fillBox(box, this.classes.active);
  }

  async fillBox(box, id) {
    // The object inside the box (GrabCut on the server); the plain rectangle if that fails.
    const w = this.maskCanvas.width;
    let inside = null;
    try { inside = await this.boxToMask(box); } catch (err) { setStatus("box: " + err.message, true); }
    for (let y = box[1]; y < box[3]; y++) {
      for (let x = box[0]; x < box[2]; x++) {
        if (!inside || inside[y * w + x]) this.labels[y * w + x] = id;
      }
    }
    this.render(box[0], box[1], box[2], box[3]);
  }

  showRect(a, b) {
    const r = this.maskCanvas.getBoundingClientRect(), s = r.width / this.maskCanvas.width;
    Object.assign(this.rectEl.style, {
      left: Math.min(a[0], b[0]) * s + "px", top: Math.min(a[1], b[1]) * s + "px",
      width: Math.abs(b[0] - a[0]) * s + "px", height: Math.abs(b[1] - a[1]) * s + "px",
    });
    this.rectEl.hidden = false;
  }

  maskBlob() { return labelsToPng(this.labels, this.maskCanvas.width, this.maskCanvas.height); }
}

function labelsToPng(labels, w, h) {
  // A label map as a grey PNG (value = id); sent with mask_mode=ids.
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const ctx = c.getContext("2d"), data = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = labels[i];
    data.data[4 * i] = v; data.data[4 * i + 1] = v; data.data[4 * i + 2] = v; data.data[4 * i + 3] = 255;
  }
  ctx.putImageData(data, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}

async function maskFromPngB64(b64, w, h) {
  // Decode a palette PNG (ids) returned by the API into a 0/1 Uint8Array.
  const img = await loadImage("data:image/png;base64," + b64);
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, w, h).data, out = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) out[i] = d[4 * i] + d[4 * i + 1] + d[4 * i + 2] > 0 ? 1 : 0;
  return out;
}

function boxTool(imageBlob) {
  return async (box) => {
    const fd = new FormData();
    fd.append("image", await imageBlob(), "image.png");
    fd.append("box", box.join(","));
    const r = await api("/api/prompt/box", { method: "POST", body: fd });
    return maskFromPngB64(r.mask_png, r.width, r.height);
  };
}

function toolGroup(selector) {
  let tool = "brush";
  document.querySelectorAll(selector).forEach((b) => {
    b.onclick = () => {
      tool = b.dataset.tool;
      document.querySelectorAll(selector).forEach((o) => o.classList.toggle("active", o === b));
    };
  });
  return () => tool;
}

// ------------------------------------------------------------------------------------------ images tab

const pairs = [];      // {file, img, labels, url}
const targets = [];    // {file, url, el}
let activePair = -1, lastResult = null;
const classes = new ClassList($("classes"));
const imageTool = toolGroup(".tool");
const editor = new MaskEditor($("editor"), classes, imageTool, () => +$("brush-size").value,
  boxTool(async () => pairs[activePair].file));

function selectPair(i) {
  activePair = i;
  if (i >= 0) editor.load(pairs[i].img, pairs[i].labels);
  if (i >= 0) pairs[i].labels = editor.labels;
  renderPairs();
}

function renderPairs() {
  const list = $("pair-list");
  list.innerHTML = "";
  pairs.forEach((p, i) => {
    const t = document.createElement("img");
    t.src = p.url;
    t.className = "pair-thumb" + (i === activePair ? " active" : "");
    t.title = p.file.name;
    t.onclick = () => selectPair(i);
    list.append(t);
  });
  if (pairs.length > 1 && $("strategy").value === "plain") $("strategy").value = "feature_ensemble";
  updateSegmentButton();
}

async function addPairs(files) {
  for (const file of files) {
    const url = URL.createObjectURL(file);
    try {
      const img = await loadImage(url);
      pairs.push({ file, img, url, labels: null });
      selectPair(pairs.length - 1);
    } catch (e) { setStatus(file.name + ": not an image the browser can show", true); }
  }
}

function addTargets(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/") && !/\.(png|jpe?g|bmp|webp|tiff?)$/i.test(file.name)) continue;
    const el = document.createElement("div");
    el.className = "target";
    const url = URL.createObjectURL(file);
    el.innerHTML = '<img class="target-image" alt=""><div class="overlay-slot">not segmented yet</div>' +
      '<div class="caption"><span class="name"></span><span class="info"></span></div>';
    el.querySelector(".target-image").src = url;
    el.querySelector(".name").textContent = file.name;
    $("targets").append(el);
    targets.push({ file, url, el });
  }
  updateSegmentButton();
}

function updateSegmentButton() {
  $("segment").disabled = !(pairs.length && targets.length);
}

async function segment() {
  const used = pairs.filter((p) => p.labels && p.labels.some((v) => v > 0));
  if (!used.length) { setStatus("paint a mask on at least one example first", true); return; }
  const fd = new FormData();
  for (const [k, p] of used.entries()) {
    fd.append("prompt_image", p.file, p.file.name);
    fd.append("prompt_mask", await labelsToPng(p.labels, p.img.naturalWidth, p.img.naturalHeight), "mask_" + k + ".png");
  }
  targets.forEach((t) => fd.append("target", t.file, t.file.name));
  fd.append("strategy", used.length > 1 && $("strategy").value === "plain" ? "feature_ensemble" : $("strategy").value);
  fd.append("seg_type", $("seg-type").value);
  fd.append("class_names", JSON.stringify(classes.names()));
  const colors = {};
  classes.classes.forEach((c) => { colors[c.id] = classes.color(c.id); });
  fd.append("colors", JSON.stringify(colors));
  fd.append("mask_mode", "ids");
  fd.append("overlay", "true");
  $("segment").disabled = true;
  setStatus("segmenting " + targets.length + " target(s) with " + used.length + " example(s)...");
  const t0 = performance.now();
  try {
    const r = await api("/api/segment", { method: "POST", body: fd });
    showResults(r);
    setStatus("segmented " + r.results.length + " target(s) in " + ((performance.now() - t0) / 1000).toFixed(1) + " s");
  } catch (e) { setStatus("segment failed: " + e.message, true); }
  updateSegmentButton();
}

function showResults(r) {
  lastResult = r;
  r.results.forEach((res, i) => {
    const el = targets[i].el, slot = el.querySelector(".overlay-slot, img.overlay");
    const img = document.createElement("img");
    img.className = "overlay";
    img.alt = "overlay of " + res.name;
    img.src = "data:image/jpeg;base64," + res.overlay_jpg;
    slot.replaceWith(img);
    const info = el.querySelector(".info");
    const ids = res.ids.map((id) => (r.class_names[id] || "id " + id) + ": " + res.classes[id].area + " px");
    info.innerHTML = "";
    info.append(ids.join(", ") || "nothing found", " ");
    const a = document.createElement("a");
    a.href = "data:image/png;base64," + res.mask_png;
    a.download = res.name.replace(/\.[^.]+$/, "") + "_mask.png";
    a.textContent = "mask";
    info.append(a);
  });
  $("download-row").hidden = false;
  updateDownload();
}

function updateDownload() {
  if (lastResult) $("download-all").href = authUrl("/api/results/" + lastResult.id + "/export.zip?format=" + $("export-format").value);
}

function initImagesTab() {
  $("prompt-file").onchange = (e) => { addPairs([...e.target.files]); e.target.value = ""; };
  $("target-file").onchange = (e) => { addTargets([...e.target.files]); e.target.value = ""; };
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); addTargets([...e.dataTransfer.files]); };
  $("segment").onclick = segment;
  $("clear-targets").onclick = () => { targets.length = 0; $("targets").innerHTML = ""; $("download-row").hidden = true; updateSegmentButton(); };
  $("clear-mask").onclick = () => editor.clear();
  $("remove-pair").onclick = () => {
    if (activePair < 0) return;
    pairs.splice(activePair, 1);
    if (pairs.length) selectPair(Math.min(activePair, pairs.length - 1));
    else { activePair = -1; location.reload(); }
    renderPairs();
  };
  $("export-format").onchange = updateDownload;
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT") return;
    const key = { b: "tool-brush", e: "tool-eraser", x: "tool-box" }[e.key];
    if (key) $(key).click();
  });
}

// ------------------------------------------------------------------------------------------ video tab

const video = { job: null, source: null, frames: 0, timer: null, playing: null, pos: 0 };
const videoClasses = new ClassList($("video-classes"));
const videoTool = toolGroup(".vtool");
const videoEditor = new MaskEditor($("video-editor"), videoClasses, videoTool, () => +$("brush-size").value,
  boxTool(async () => (await fetch(authUrl("/api/video/" + video.job.id + "/first.jpg"))).blob()));

async function uploadVideo(source) {
  // source: {frames: File[]} or {video: File}
  video.source = source;
  const fd = new FormData();
  if (source.video) fd.append("video", source.video, source.video.name);
  else source.frames.forEach((f) => fd.append("frame", f, f.name));
  setStatus("uploading video...");
  try {
    video.job = await api("/api/video", { method: "POST", body: fd });
    const blob = await api("/api/video/" + video.job.id + "/first.jpg");
    const img = await loadImage(URL.createObjectURL(blob));
    videoEditor.load(img, video.labels && video.labels.length === img.naturalWidth * img.naturalHeight ? video.labels : null);
    video.labels = videoEditor.labels;
    $("video-meta").textContent = video.job.total + " frames, " + video.job.width + "x" + video.job.height;
    $("propagate").disabled = false;
    setStatus("paint the objects on the first frame, then Propagate");
  } catch (e) { setStatus("video: " + e.message, true); }
}

async function propagate() {
  if (!videoEditor.hasMask()) { setStatus("paint at least one object on the first frame", true); return; }
  if (!video.job || video.job.status !== "waiting_mask") await uploadVideo(video.source);  // a fresh job
  const fd = new FormData();
  fd.append("first_mask", await videoEditor.maskBlob(), "first_mask.png");
  fd.append("mask_mode", "ids");
  const colors = {};
  videoClasses.classes.forEach((c) => { colors[c.id] = videoClasses.color(c.id); });
  fd.append("colors", JSON.stringify(colors));
  if ($("context-frames").value !== "") fd.append("context_frames", $("context-frames").value);
  $("propagate").disabled = true;
  try {
    video.job = await api("/api/video/" + video.job.id + "/mask", { method: "POST", body: fd });
    setStatus("propagating...");
    poll();
  } catch (e) { setStatus("propagate: " + e.message, true); $("propagate").disabled = false; }
}

async function poll() {
  try {
    const j = await api("/api/video/" + video.job.id);
    video.job = j;
    $("video-progress").value = j.progress;
    $("video-status").textContent = j.status + " " + j.done + "/" + j.total + (j.fps ? " (" + j.fps + " frames/s)" : "");
    if (j.done > 0) showFrame(Math.min(video.pos, j.done - 1), j.done);
    if (j.status === "done") {
      setStatus("propagated " + j.total + " frames");
      $("video-zip").href = authUrl("/api/video/" + j.id + "/masks.zip");
      $("video-zip").hidden = false;
      $("propagate").disabled = false;
      return;
    }
    if (j.status === "failed" || j.status === "cancelled") {
      setStatus("video " + j.status + ": " + (j.error || ""), j.status === "failed");
      $("propagate").disabled = false;
      return;
    }
  } catch (e) { setStatus("video: " + e.message, true); return; }
  video.timer = setTimeout(poll, 400);
}

function showFrame(i, available) {
  video.pos = i;
  $("player-frame").src = authUrl("/api/video/" + video.job.id + "/overlay/" + i + ".jpg");
  $("player-pos").max = available - 1;
  $("player-pos").value = i;
  $("player-pos").disabled = false;
  $("play").disabled = false;
  $("player-label").textContent = "frame " + (i + 1) + " / " + video.job.total;
}

function togglePlay() {
  if (video.playing) { clearInterval(video.playing); video.playing = null; $("play").textContent = "Play"; return; }
  $("play").textContent = "Pause";
  video.playing = setInterval(() => {
    const n = video.job.done;
    if (n > 0) showFrame((video.pos + 1) % n, n);
  }, 100);
}

function initVideoTab() {
  $("video-frames").onchange = (e) => {
    const files = [...e.target.files].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    if (files.length) uploadVideo({ frames: files });
    e.target.value = "";
  };
  $("video-file").onchange = (e) => { if (e.target.files[0]) uploadVideo({ video: e.target.files[0] }); e.target.value = ""; };
  $("propagate").onclick = propagate;
  $("video-clear").onclick = () => videoEditor.clear();
  $("play").onclick = togglePlay;
  $("player-pos").oninput = (e) => showFrame(+e.target.value, video.job.done);
}

// ------------------------------------------------------------------------------------------ start

async function init() {
  document.querySelectorAll(".tab").forEach((t) => {
    t.onclick = () => {
      document.querySelectorAll(".tab").forEach((o) => o.classList.toggle("active", o === t));
      $("page-images").hidden = t.dataset.tab !== "images";
      $("page-video").hidden = t.dataset.tab !== "video";
    };
  });
  $("token").value = TOKEN;
  $("token").onchange = () => { TOKEN = $("token").value; localStorage.setItem("painter_seg_token", TOKEN); loadInfo(); };
  initImagesTab();
  initVideoTab();
  await loadInfo();
}

async function loadInfo() {
  try {
    const info = await api("/api/info");
    $("info").textContent = info.model + " on " + info.device + " (" + info.precision + ")";
    const sel = $("strategy");
    sel.innerHTML = "";
    Object.keys(info.strategies).filter((s) => s !== "tuned").forEach((s) => sel.append(new Option(s, s)));
    sel.value = info.default_strategy;
    $("seg-type").value = info.default_seg_type;
    if (info.token_required) $("token-box").hidden = false;
  } catch (e) { $("info").textContent = "not connected: " + e.message; }
}

init();
