// MediaPipe's own web solution (npm @mediapipe/hands, served locally) on the demo's frames:
// the speed and accuracy reference for the pysparse pipelines. Same URL parameters as the
// demo page (source, frames, loop, start); frames are processed back to back, and only
// hands.send() is timed (the frame is drawn on the input canvas before).
//
// Extra parameters: complexity=0|1 (1, the full models, as the demo's), cpu=0 (WebGL
// inference), redetect=1 (hands.reset() before every frame, so that palm detection runs on
// every frame: this version of hands.js has no staticImageMode option).
//
// window.mediapipeReference.timings: [{frame, index, ms, found, detected}], .last: landmarks
// in pixels. `detected` (palm detection ran) is not reported by hands.js; it follows from
// its graph: with maxNumHands 1, palm detection runs on the first frame, after a reset, and
// after a frame that gave no hand; otherwise the hand is tracked from its landmarks.

import { drawResult } from "./draw.mjs";
import { ClipSource, StillSource } from "./sources.mjs";

const params = new URLSearchParams(location.search);
const sourceName = params.get("source") ?? "clip";
const maxFrames = Number(params.get("frames") ?? 0);
const options = {
  maxNumHands: 1,
  modelComplexity: Number(params.get("complexity") ?? 1),
  minDetectionConfidence: 0.5,
  minTrackingConfidence: 0.5,
  selfieMode: false,
  // useCpuInference (an option hands.js knows but does not declare): its models run in its
  // wasm (XNNPACK) rather than on WebGL, which is software-rendered in a headless browser.
  useCpuInference: params.get("cpu") !== "0",
};
const redetect = params.get("redetect") === "1";

const ref = { ready: false, done: false, error: null, timings: [], last: null, options, redetect,
  modelComplexity: options.modelComplexity };
globalThis.mediapipeReference = ref;
const status = (t) => { document.getElementById("status").textContent = t; };
const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
// hands.send() takes a canvas: the frame is drawn on this one first (not timed).
const input = document.createElement("canvas");
const inputCtx = input.getContext("2d");

async function main() {
  const hands = new globalThis.Hands({ locateFile: (f) => new URL(`../node_modules/@mediapipe/hands/${f}`, location.href).href });
  hands.setOptions(options);
  let results = null;
  hands.onResults((r) => { results = r; });
  await hands.initialize();
  const source = sourceName === "clip" ? await ClipSource.open({ loop: params.get("loop") !== "0", start: Number(params.get("start") ?? 0) })
    : await StillSource.bundled(Number(sourceName.slice(6)));
  status("running");
  let tracking = false; // a hand came out of the previous frame
  for (let n = 0; !maxFrames || n < maxFrames; n++) {
    const frame = await source.next();
    if (!frame) break;
    const { width: w, height: h } = frame.image;
    if (input.width !== w || input.height !== h) { input.width = w; input.height = h; }
    inputCtx.drawImage(frame.image, 0, 0);
    if (redetect) { hands.reset(); tracking = false; }
    results = null;
    const t0 = performance.now();
    await hands.send({ image: input });
    const ms = performance.now() - t0;
    const lm = results?.multiHandLandmarks?.[0];
    const hand = lm ? { landmarks: lm.map((p) => [p.x * w, p.y * h, p.z * w]), handedness: results.multiHandedness?.[0] } : null;
    ref.timings.push({ frame: n, index: frame.index, ms, found: !!hand, detected: !tracking });
    tracking = !!hand;
    ref.last = { frame: n, index: frame.index, width: w, height: h, hand };
    // MediaPipe's own bone list (a global of its hands.js, a Set or array of [a, b] pairs)
    drawResult(ctx, frame.image, { hand }, { color: "#60a5fa", connections: [...(globalThis.HAND_CONNECTIONS ?? [])] });
    frame.image.close();
    ref.ready = true;
    status(`frame ${n}: ${ms.toFixed(1)} ms`);
  }
  ref.done = true;
  status(`done: ${ref.timings.length} frames`);
}

main().catch((err) => {
  ref.error = String(err?.message ?? err);
  status(ref.error);
});
