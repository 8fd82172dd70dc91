// The demo's inference worker: holds the palm model and the dense and sparse landmark
// models, and runs both hand-tracking pipelines on every frame, one after the other, so
// that the page stays responsive and the two are timed on the same frames under the same
// conditions.
//
// Messages in:  {type: "init", threads, sparsity, keepCrops, variant}   -> {type: "ready", info}
//               {type: "frame", id, bitmap | rgba+width+height} -> {type: "result", id, ...}
//               {type: "reset"}                                  (new source: forget the hands)
// Errors come back as {type: "error", message, id?}.

import { load } from "../web/pysparse.mjs";
import { HandTracker } from "./tracker.mjs";

const MODELS = new URL("./models/", import.meta.url);
const LANDMARK_OUTPUT_NAMES = ["Identity", "Identity_1", "Identity_2"]; // screen, presence, handedness

let state = null; // {models, trackers: {dense, sparse}, info}
let canvas = null;

async function fetchJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`could not fetch ${url}: HTTP ${r.status} (run \`python -m pysparse.demo_assets\`)`);
  return r.json();
}

function landmarkOutputs(model) {
  const names = model.outputs.map((o) => o.name);
  return LANDMARK_OUTPUT_NAMES.every((n) => names.includes(n)) ? LANDMARK_OUTPUT_NAMES : null;
}

async function init({ threads, sparsity, keepCrops, variant }) {
  const manifest = await fetchJson(new URL("manifest.json", MODELS));
  const sparseFile = manifest.sparse[String(sparsity)];
  if (!sparseFile) throw new Error(`no ${sparsity}% sparse model; available: ${Object.keys(manifest.sparse).join(", ")}%`);
  const entry = (file) => manifest.models.find((m) => m.file === file);
  const opts = variant ? { threads, variant } : { threads };
  // Free the old models first: their threads go back to the engine's pool.
  for (const m of Object.values(state?.models ?? {})) m.dispose();
  state = null;
  const t0 = performance.now();
  const palm = await load(new URL(manifest.palm, MODELS).href, opts);
  const dense = await load(new URL(manifest.dense, MODELS).href, opts);
  const sparse = await load(new URL(sparseFile, MODELS).href, opts);
  const loadMs = performance.now() - t0;
  state = {
    models: { palm, dense, sparse },
    trackers: {
      dense: new HandTracker(palm, dense, { landmarkOutputs: landmarkOutputs(dense), keepCrops }),
      sparse: new HandTracker(palm, sparse, { landmarkOutputs: landmarkOutputs(sparse), keepCrops }),
    },
  };
  const info = dense.info;
  state.info = {
    variant: info.variant,
    buildVariant: info.buildVariant,
    threads: info.threads,
    features: info.features,
    loadMs,
    models: {
      palm: { file: manifest.palm, ...describe(entry(manifest.palm), palm) },
      dense: { file: manifest.dense, ...describe(entry(manifest.dense), dense) },
      sparse: { file: sparseFile, ...describe(entry(sparseFile), sparse) },
    },
  };
  return state.info;
}

function describe(entry, model) {
  const layers = model.info.metadata?.layers ?? [];
  const sparseLayers = layers.filter((l) => l.encoding === "sparse").length;
  return { label: entry?.label ?? "", sparsity: entry?.sparsity ?? 0, finetuned: !!entry?.finetuned,
    bytes: model.info.fileBytes, layers: layers.length, sparseLayers };
}

// The frame's RGBA pixels: from an ImageBitmap (drawn on an OffscreenCanvas) or as sent.
function pixels(msg) {
  if (msg.rgba) return { rgba: msg.rgba, width: msg.width, height: msg.height };
  const { bitmap } = msg;
  if (!canvas || canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  }
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { rgba: ctx.getImageData(0, 0, canvas.width, canvas.height).data, width: canvas.width, height: canvas.height };
}

async function frame(msg) {
  if (!state) throw new Error("the models are not loaded yet");
  const t0 = performance.now();
  const f = pixels(msg);
  const grab = performance.now() - t0;
  const result = { type: "result", id: msg.id, width: f.width, height: f.height, grab };
  const transfer = [];
  // Alternate which pipeline goes first, so that neither always runs on a warm cache.
  const order = msg.id % 2 ? ["sparse", "dense"] : ["dense", "sparse"];
  for (const name of order) {
    const r = await state.trackers[name].process(f);
    r.timings.preprocess += grab; // both pipelines need the frame's pixels
    if (r.crop) transfer.push(r.crop.buffer);
    result[name] = r;
  }
  self.postMessage(result, transfer);
}

self.onmessage = async (e) => {
  const msg = e.data;
  try {
    if (msg.type === "init") self.postMessage({ type: "ready", info: await init(msg) });
    else if (msg.type === "frame") await frame(msg);
    else if (msg.type === "reset") for (const t of Object.values(state?.trackers ?? {})) t.reset();
    else throw new Error(`unknown message ${msg.type}`);
  } catch (err) {
    if (msg.bitmap) msg.bitmap.close?.();
    self.postMessage({ type: "error", id: msg.id, message: String(err?.message ?? err), stack: String(err?.stack ?? "") });
  }
};
