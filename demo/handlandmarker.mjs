// MediaPipe Tasks Vision's HandLandmarker (npm @mediapipe/tasks-vision, served locally) on
// the demo's frames: the primary speed reference for the pysparse pipelines. CPU delegate,
// VIDEO running mode (palm detection, then tracking from the landmarks), one hand.
// Frames are processed back to back and only detectForVideo() is timed.
//
// URL parameters: source (clip | still:K), frames, loop, start (as the demo page), and
// task: the URL of the hand_landmarker.task bundle (`make bench-demo` builds it from the
// project's models, see pysparse/bench/handlandmarker.py).
//
// window.handLandmarkerReference.timings: [{frame, index, ms, found, detected}], .last:
// landmarks in pixels. `detected` (palm detection ran) is not reported by the task; with
// numHands 1 it runs on the first frame and after a frame that gave no hand, and the hand
// is tracked from its landmarks otherwise.

import { drawResult } from "./draw.mjs";
import { ClipSource, StillSource } from "./sources.mjs";

const TASKS_VISION = "../node_modules/@mediapipe/tasks-vision/";
const params = new URLSearchParams(location.search);
const sourceName = params.get("source") ?? "clip";
const maxFrames = Number(params.get("frames") ?? 0);
const taskUrl = params.get("task") ?? "./handlandmarker/hand_landmarker.task";
const options = {
  baseOptions: { modelAssetPath: new URL(taskUrl, location.href).href, delegate: "CPU" },
  runningMode: "VIDEO",
  numHands: 1,
  minHandDetectionConfidence: 0.5,
  minHandPresenceConfidence: 0.5,
  minTrackingConfidence: 0.5,
};

const ref = { ready: false, done: false, error: null, timings: [], last: null, options, version: null, wasm: null };
globalThis.handLandmarkerReference = ref;
const status = (t) => { document.getElementById("status").textContent = t; };
const ctx = document.getElementById("canvas").getContext("2d");

async function main() {
  const vision = await import(`${TASKS_VISION}vision_bundle.mjs`);
  ref.version = (await (await fetch(`${TASKS_VISION}package.json`)).json()).version;
  const fileset = await vision.FilesetResolver.forVisionTasks(new URL(`${TASKS_VISION}wasm`, location.href).href);
  const landmarker = await vision.HandLandmarker.createFromOptions(fileset, options);
  const connections = vision.HandLandmarker.HAND_CONNECTIONS.map(({ start, end }) => [start, end]);
  // which of the package's wasm builds the FilesetResolver chose (SIMD or not)
  ref.wasm = performance.getEntriesByType("resource").map((e) => e.name.split("/").pop())
    .find((name) => name.startsWith("vision_wasm") && name.endsWith(".wasm")) ?? null;
  const source = sourceName === "clip" ? await ClipSource.open({ loop: params.get("loop") !== "0", start: Number(params.get("start") ?? 0) })
    : await StillSource.bundled(Number(sourceName.slice(6)));
  status("running");
  let tracking = false; // a hand came out of the previous frame
  let timestamp = 0;
  for (let n = 0; !maxFrames || n < maxFrames; n++) {
    const frame = await source.next();
    if (!frame) break;
    const { width: w, height: h } = frame.image;
    timestamp += 1000 / (source.fps || 30); // VIDEO mode wants increasing timestamps
    const t0 = performance.now();
    const result = landmarker.detectForVideo(frame.image, timestamp);
    const ms = performance.now() - t0;
    const lm = result.landmarks?.[0];
    const hand = lm ? { landmarks: lm.map((p) => [p.x * w, p.y * h, p.z * w]), handedness: result.handedness?.[0]?.[0] } : null;
    ref.timings.push({ frame: n, index: frame.index, ms, found: !!hand, detected: !tracking });
    tracking = !!hand;
    ref.last = { frame: n, index: frame.index, width: w, height: h, hand };
    drawResult(ctx, frame.image, { hand }, { color: "#a78bfa", connections });
    frame.image.close();
    ref.ready = true;
    status(`frame ${n}: ${ms.toFixed(1)} ms`);
  }
  landmarker.close();
  ref.done = true;
  status(`done: ${ref.timings.length} frames`);
}

main().catch((err) => {
  ref.error = String(err?.message ?? err);
  status(ref.error);
});
