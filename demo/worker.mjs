// The demo's inference worker: holds the palm model and the dense and sparse landmark
// models, and runs both hand-tracking pipelines on every frame, one after the other, so
// that the page stays responsive and the two are timed on the same frames under the same
// conditions.
//
// Messages in:  {type: "init", threads, sparsity, keepCrops, variant, grab} -> {type: "ready", info}
//               {type: "frame", id, bitmap | rgba+width+height} -> {type: "result", id, ...}
//               {type: "reset"}                                  (new source: forget the hands)
// Errors come back as {type: "error", message, id?}.

import { load } from "../web/pysparse.mjs";
import { HandLandmarker } from "../web/hands/index.mjs";
import { roiPixelRect } from "../web/hands/landmarks.mjs";

const MODELS = new URL("./models/", import.meta.url);

let state = null; // {models, trackers: {dense, sparse} (HandLandmarkers), info}
let clock = 0; // the frames' timestamps for detectForVideo
let canvas = null;

async function fetchJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`could not fetch ${url}: HTTP ${r.status} (run \`python -m pysparse.demo_assets\`)`);
  return r.json();
}

async function init({ threads, sparsity, keepCrops, variant, grab }) {
  if (grab === "canvas") videoFrameCopy = false;
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
    // Two landmarkers sharing the palm model (the task API, fed this worker's frames).
    trackers: {
      dense: new HandLandmarker(palm, dense, { keepCrops }),
      sparse: new HandLandmarker(palm, sparse, { keepCrops }),
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
    // Landmark names and the bones between them, as the packer stored them in the model.
    landmarks: dense.info.metadata?.landmarks ?? { names: [], connections: [] },
  };
  return state.info;
}

function describe(entry, model) {
  const layers = model.info.metadata?.layers ?? [];
  const sparseLayers = layers.filter((l) => l.encoding === "sparse").length;
  return { label: entry?.label ?? "", sparsity: entry?.sparsity ?? 0, finetuned: !!entry?.finetuned, source: entry?.source ?? "",
    bytes: model.info.fileBytes, layers: layers.length, sparseLayers };
}

// The frame's RGBA pixels, from an ImageBitmap or as sent. The bitmap's pixels are copied
// into one buffer kept between frames; when both pipelines are tracking a hand, only the
// rectangle their ROIs read is copied (the crops never look outside it).
let frameBuffer = null; // {rgba, width, height, padded}
let videoFrameCopy = typeof VideoFrame === "function"; // false once it failed: canvas readback
let videoFrameError = null;

function wantedRect(width, height) {
  let rect = null;
  for (const t of Object.values(state.trackers)) {
    const r = t.roi && roiPixelRect(t.roi, width, height);
    if (!r) return null; // palm detection (or an ROI off the image) needs the whole frame
    rect = rect ? unionRect(rect, r) : r;
  }
  return rect;
}

async function pixels(msg) {
  if (msg.rgba) return { rgba: msg.rgba, width: msg.width, height: msg.height, copied: msg.width * msg.height };
  const { bitmap } = msg;
  const { width, height } = bitmap;
  let rect = null;
  if (frameBuffer?.width !== width || frameBuffer?.height !== height) {
    // One spare row: copyTo wants room for whole strides below a rectangle's first pixel.
    const padded = new Uint8ClampedArray((width * height + width) * 4);
    frameBuffer = { rgba: padded.subarray(0, width * height * 4), width, height, padded };
  } else {
    rect = wantedRect(width, height);
  }
  rect ??= { x: 0, y: 0, width, height };
  try {
    if (videoFrameCopy) {
      try {
        await copyWithVideoFrame(bitmap, rect, frameBuffer);
      } catch (err) {
        videoFrameCopy = false; // this browser cannot convert to RGBA here
        videoFrameError = String(err?.message ?? err);
      }
    }
    if (!videoFrameCopy) copyWithCanvas(bitmap, rect, frameBuffer);
  } finally {
    bitmap.close();
  }
  const { rgba } = frameBuffer;
  return { rgba, width, height, copied: rect.width * rect.height };
}

// VideoFrame.copyTo writes the rectangle in place into the full-frame buffer (its layout
// gives the rectangle's offset and the frame's row stride), converted to RGBA.
async function copyWithVideoFrame(bitmap, rect, dest) {
  const vf = new VideoFrame(bitmap, { timestamp: 0 });
  try {
    await vf.copyTo(dest.padded, { rect, format: "RGBA",
      layout: [{ offset: (rect.y * dest.width + rect.x) * 4, stride: dest.width * 4 }] });
  } finally {
    vf.close();
  }
}

function copyWithCanvas(bitmap, rect, dest) {
  if (!canvas || canvas.width !== dest.width || canvas.height !== dest.height) {
    canvas = new OffscreenCanvas(dest.width, dest.height);
  }
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, rect.x, rect.y, rect.width, rect.height, rect.x, rect.y, rect.width, rect.height);
  const data = ctx.getImageData(rect.x, rect.y, rect.width, rect.height).data;
  for (let row = 0; row < rect.height; row++) {
    const from = row * rect.width * 4;
    dest.rgba.set(data.subarray(from, from + rect.width * 4), ((rect.y + row) * dest.width + rect.x) * 4);
  }
}

function unionRect(a, b) {
  const x = Math.min(a.x, b.x), y = Math.min(a.y, b.y);
  return { x, y, width: Math.max(a.x + a.width, b.x + b.width) - x, height: Math.max(a.y + a.height, b.y + b.height) - y };
}

async function frame(msg) {
  if (!state) throw new Error("the models are not loaded yet");
  const t0 = performance.now();
  const f = await pixels(msg);
  const grab = performance.now() - t0;
  // copied: the share of the frame's pixels read this time; grabber: how they were read.
  const grabber = msg.rgba ? "sent" : videoFrameCopy ? "VideoFrame"
    : `canvas${videoFrameError ? ` (VideoFrame: ${videoFrameError})` : ""}`;
  const result = { type: "result", id: msg.id, width: f.width, height: f.height, grab,
    copied: f.copied / (f.width * f.height), grabber };
  const transfer = [];
  // Alternate which pipeline goes first, so that neither always runs on a warm cache.
  const order = msg.id % 2 ? ["sparse", "dense"] : ["dense", "sparse"];
  clock++;
  for (const name of order) {
    const r = (await state.trackers[name].detectForVideo({ data: f.rgba, width: f.width, height: f.height }, clock)).details;
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
