// The demo page: frames from a source go to the inference worker, which runs the dense
// and the sparse hand-tracking pipelines on each; the results are drawn side by side and
// every frame's timings are recorded in window.pysparseDemo.timings.
//
// URL parameters (for tests and benchmarks): source=clip|still:N|camera, threads=N,
// sparsity=70|80|87|90, frames=N (stop after N frames), pace=0 (no waiting between clip
// frames), loop=0 (stop at the clip's end), start=N (first clip frame), crops=1 (keep the
// landmark crops), variant=simd|simd-threads|relaxed|relaxed-threads (force an engine build),
// grab=videoframe|canvas (how the worker reads a frame's pixels; default: VideoFrame where it can).

import { drawChart, median, STAGES } from "./chart.mjs";
import { drawResult } from "./draw.mjs";
import { ClipSource, StillSource, VideoSource } from "./sources.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PIPELINES = ["dense", "sparse"];
const COLORS = { dense: "#34d399", sparse: "#f59e0b" };
const STAGE_NAMES = { preprocess: "preprocess", palm: "palm detection", landmarks: "landmarks", postprocess: "postprocess", draw: "draw" };

const isolated = globalThis.crossOriginIsolated === true;
const threadChoices = isolated ? [1, 2, 4] : [1];
const settings = {
  threads: Number(params.get("threads") ?? (isolated ? Math.min(2, navigator.hardwareConcurrency || 1) : 1)),
  sparsity: Number(params.get("sparsity") ?? 80),
  source: params.get("source") ?? "clip",
  maxFrames: Number(params.get("frames") ?? 0),
  pace: params.get("pace") !== "0",
  loop: params.get("loop") !== "0",
  start: Number(params.get("start") ?? 0),
  keepCrops: params.get("crops") === "1",
  grab: params.get("grab") ?? undefined, // how the worker reads a frame's pixels: videoframe | canvas
  variant: params.get("variant") ?? undefined, // the engine build; default: the best available
};

// What tests and benchmarks read.
const demo = {
  ready: false, // models loaded, frames flowing
  done: false, // frames=N reached (or the clip ended with loop=0)
  error: null,
  info: null,
  settings,
  timings: [], // one entry per processed frame
  last: null, // the last frame's results: {frame, width, height, dense: {...}, sparse: {...}}
  crops: null, // with crops=1: the last landmark crops, {dense, sparse}: Float32Array [1, 3, 224, 224]
  cropBase64(name) {
    const c = this.crops?.[name];
    if (!c) return null;
    const bytes = new Uint8Array(c.buffer, c.byteOffset, c.byteLength);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  },
  setSource: (v) => queue({ source: v }),
  setThreads: (n) => queue({ threads: Number(n) }),
  setSparsity: (s) => queue({ sparsity: Number(s) }),
  pause: () => { paused = true; },
  play: () => { paused = false; wake(); },
  processed: 0,
};
globalThis.pysparseDemo = demo;

// -- the worker -------------------------------------------------------------------------
const worker = new Worker(new URL("./worker.mjs", import.meta.url), { type: "module" });
const pending = new Map();
let nextId = 0;
worker.onmessage = (e) => {
  const msg = e.data;
  const key = msg.type === "ready" || (msg.type === "error" && msg.id === undefined) ? "init" : msg.id;
  const p = pending.get(key);
  if (!p) return;
  pending.delete(key);
  msg.type === "error" ? p.reject(new Error(msg.message)) : p.resolve(msg);
};
worker.onerror = (e) => fail(new Error(`the worker failed: ${e.message}`));

function request(msg, transfer = []) {
  const key = msg.type === "init" ? "init" : msg.id;
  return new Promise((resolve, reject) => {
    pending.set(key, { resolve, reject });
    worker.postMessage(msg, transfer);
  });
}

// -- settings changes are applied between frames ------------------------------------------
let changes = {};
let paused = false;
let wakeUp = null;
function wake() { wakeUp?.(); }
function queue(change) {
  Object.assign(changes, change);
  demo.done = false; // frames=N counts again from the change
  wake();
}

let source = null;
let budgetStart = 0;
let loaded = null; // {threads, sparsity} of the models in the worker

async function openSource(name) {
  if (name === "clip") return ClipSource.open({ loop: settings.loop, start: settings.start });
  if (name.startsWith("still:")) return StillSource.bundled(Number(name.slice(6)));
  if (name === "camera") return VideoSource.camera();
  if (name === "file") {
    const file = $("file").files[0];
    if (!file) throw new Error("choose a file first");
    if (file.type.startsWith("image/")) return new StillSource(await createImageBitmap(file), file.name);
    return VideoSource.file(file);
  }
  throw new Error(`unknown source ${name}`);
}

async function applyChanges() {
  const c = changes;
  changes = {};
  Object.assign(settings, c);
  budgetStart = demo.processed;
  if (!loaded || loaded.threads !== settings.threads || loaded.sparsity !== settings.sparsity) {
    status(`loading models (${settings.threads} thread${settings.threads > 1 ? "s" : ""}, ${settings.sparsity}% sparse)…`);
    const { info } = await request({ type: "init", threads: settings.threads, sparsity: settings.sparsity,
      keepCrops: settings.keepCrops, variant: settings.variant, grab: settings.grab });
    loaded = { threads: settings.threads, sparsity: settings.sparsity };
    demo.info = info;
    showInfo(info);
  }
  if (!source || "source" in c) {
    source?.stop();
    source = null;
    status(`opening ${settings.source}…`);
    source = await openSource(settings.source);
    worker.postMessage({ type: "reset" });
  }
  syncControls();
  status("");
}

// -- the frame loop -------------------------------------------------------------------------
const canvases = { dense: $("canvas-dense"), sparse: $("canvas-sparse") };
const contexts = Object.fromEntries(PIPELINES.map((p) => [p, canvases[p].getContext("2d")]));
const sleep = (ms) => new Promise((r) => { wakeUp = r; setTimeout(r, ms); });

async function loop() {
  for (;;) {
    if (Object.keys(changes).length || !source) {
      try {
        await applyChanges();
      } catch (err) {
        fail(err);
        await sleep(1e9); // until the user changes something
        continue;
      }
    }
    if (paused || demo.done) {
      await sleep(1e9);
      continue;
    }
    const t0 = performance.now();
    const frame = await source.next();
    if (!frame) {
      demo.done = true;
      status("end of the clip");
      continue;
    }
    await step(frame);
    frame.image.close();
    if (settings.maxFrames && demo.processed - budgetStart >= settings.maxFrames) {
      demo.done = true;
      status(`stopped after ${settings.maxFrames} frames`);
    }
    const wait = settings.pace && source.fps ? 1000 / source.fps - (performance.now() - t0) : 0;
    await sleep(Math.max(0, wait));
  }
}

async function step(frame) {
  const id = nextId++;
  const forWorker = await createImageBitmap(frame.image);
  const r = await request({ type: "frame", id, bitmap: forWorker }, [forWorker]);
  const record = {
    frame: demo.processed, source: source.kind, index: frame.index, label: frame.label,
    width: r.width, height: r.height, threads: loaded.threads, sparsity: loaded.sparsity,
    variant: demo.info.variant, grab: r.grab, copied: r.copied, grabber: r.grabber,
  };
  for (const p of PIPELINES) {
    const t0 = performance.now();
    drawResult(contexts[p], frame.image, r[p], { color: COLORS[p], roi: $("show-roi").checked,
      connections: demo.info.landmarks.connections });
    const draw = performance.now() - t0;
    const t = { ...r[p].timings, draw };
    t.total = STAGES.reduce((s, k) => s + t[k], 0);
    Object.assign(t, { detected: r[p].detected, found: !!r[p].hand, presence: r[p].presence ?? 0 });
    record[p] = t;
  }
  demo.timings.push(record);
  demo.processed++;
  demo.last = { frame: record.frame, index: frame.index, width: r.width, height: r.height };
  for (const p of PIPELINES) {
    demo.last[p] = { hand: r[p].hand, roi: r[p].roi, palm: r[p].palm, presence: r[p].presence ?? 0, raw: r[p].raw };
  }
  if (settings.keepCrops) demo.crops = { dense: r.dense.crop ?? null, sparse: r.sparse.crop ?? null };
  demo.ready = true;
  showStats();
}

// -- what the page shows ----------------------------------------------------------------------
function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function fail(err) {
  demo.error = String(err?.message ?? err);
  status(demo.error, true);
}

function showInfo(info) {
  const f = info.features ?? {};
  $("info").textContent = `engine ${info.variant} (${info.buildVariant}), ${info.threads} thread${info.threads > 1 ? "s" : ""}` +
    ` · cross-origin isolated: ${isolated ? "yes" : "no (1 thread only)"} · SIMD ${f.simd ? "yes" : "no"}, relaxed SIMD ${f.relaxedSimd ? "yes" : "no"}` +
    ` · models loaded in ${info.loadMs.toFixed(0)} ms`;
  const m = info.models;
  const kb = (b) => `${(b / 1024).toFixed(0)} KiB`;
  $("label-dense").textContent = `hand_landmark_full, ${m.dense.label} (${kb(m.dense.bytes)}) · palm_detection_full, ${m.palm.label}`;
  $("label-sparse").textContent = `hand_landmark_full, ${m.sparse.label} (${kb(m.sparse.bytes)}, ${m.sparse.sparseLayers} of ${m.sparse.layers} layers stored sparse) · same palm model`;
}

function showStats() {
  const recent = demo.timings.slice(-60);
  for (const p of PIPELINES) {
    const last = recent[recent.length - 1][p];
    const rows = [...STAGES, "total"].map((k) => {
      const med = median(recent.map((r) => r[p][k]));
      return `<tr${k === "total" ? ' class="total"' : ""}><td>${STAGE_NAMES[k] ?? k}</td><td>${last[k].toFixed(1)}</td><td>${med.toFixed(1)}</td></tr>`;
    });
    const detections = recent.filter((r) => r[p].detected).length;
    const hand = demo.last[p].hand;
    $(`stats-${p}`).innerHTML = `<tr><th></th><th>ms, last</th><th>median of ${recent.length}</th></tr>${rows.join("")}` +
      `<tr><td colspan="3">hand presence ${last.presence.toFixed(2)}` +
      (hand ? ` · handedness ${hand.label} (${Math.max(hand.handedness, 1 - hand.handedness).toFixed(2)}, selfie view)` : " · no hand") +
      ` · palm detection on ${detections} of ${recent.length} frames</td></tr>`;
  }
  drawChart($("chart"), PIPELINES.map((p) => ({ name: p, color: COLORS[p], frames: demo.timings.map((r) => r[p]) })));
}

function syncControls() {
  $("source").value = settings.source;
  $("threads").value = String(settings.threads);
  $("sparsity").value = String(settings.sparsity);
}

$("threads").innerHTML = [1, 2, 4].map((n) => `<option value="${n}" ${threadChoices.includes(n) ? "" : "disabled"}>${n}</option>`).join("");
if (!isolated) $("threads").title = "more threads need a cross-origin-isolated page (pysparse serve sets the headers)";
$("threads").onchange = (e) => queue({ threads: Number(e.target.value) });
$("sparsity").onchange = (e) => queue({ sparsity: Number(e.target.value) });
$("source").onchange = (e) => {
  if (e.target.value === "file") $("file").click();
  else queue({ source: e.target.value });
};
$("file").onchange = () => queue({ source: "file" });
$("pause").onclick = () => {
  paused ? demo.play() : demo.pause();
  $("pause").textContent = paused ? "Play" : "Pause";
};
$("show-roi").onchange = () => {};
if (!threadChoices.includes(settings.threads)) settings.threads = 1;
syncControls();
changes = { source: settings.source };
loop();
