// One hand-tracking pipeline (palm model + landmark model), MediaPipe Hands' way:
// palm detection finds the hand, the landmark model runs on the rotated hand ROI, and the
// landmarks give the next frame's ROI; palm detection runs again only once the landmark
// model's hand presence drops below the threshold.

import { PALM_INPUT, decodePalms, letterboxRoi, palmToHandRoi, ssdAnchors, weightedNms } from "./palm.mjs";
import { LANDMARK_INPUT, cropToTensor, decodeLandmarks, decodeWorldLandmarks, landmarksToRoi } from "./landmarks.mjs";

export const MIN_PRESENCE = 0.5; // MediaPipe's default min_tracking_confidence
const now = () => performance.now();

/** The model's output arrays, found by size (names differ between importers and versions). */
export function outputsBySize(outputs, sizes) {
  const entries = Object.entries(outputs).map(([name, o]) => ({ name, data: o.data ?? o }));
  const used = new Set();
  return sizes.map((n) => {
    const hit = entries.find((e) => e.data.length === n && !used.has(e.name));
    if (!hit) throw new Error(`no model output of ${n} values among ${entries.map((e) => `${e.name}[${e.data.length}]`).join(", ")}`);
    used.add(hit.name);
    return hit.data;
  });
}

export class HandTracker {
  /**
   * palm, landmark: loaded pysparse models (run(Float32Array NCHW) -> {name: {data, shape}}).
   * landmarkOutputs: names of the landmark model's [screen landmarks, presence, handedness,
   * world landmarks (optional)] outputs (the first two 63-value outputs are screen then world
   * landmarks otherwise). minPresence: below it the hand counts as lost.
   */
  constructor(palm, landmark, { landmarkOutputs = null, keepCrops = false, minPresence = MIN_PRESENCE } = {}) {
    this.palm = palm;
    this.landmark = landmark;
    this.landmarkOutputs = landmarkOutputs;
    this.keepCrops = keepCrops;
    this.minPresence = minPresence;
    this.anchors = ssdAnchors();
    // Model inputs, reused from frame to frame.
    this.palmInput = new Float32Array(3 * PALM_INPUT * PALM_INPUT);
    this.landmarkInput = new Float32Array(3 * LANDMARK_INPUT * LANDMARK_INPUT);
    this.reset();
  }

  reset() {
    this.roi = null;
  }

  async detectPalm(frame, t) {
    const letterbox = letterboxRoi(frame.width, frame.height);
    this.palm.wake?.(); // its threads start while the frame is cropped
    let t0 = now();
    cropToTensor(frame.rgba, frame.width, frame.height, letterbox, PALM_INPUT, "zero", this.palmInput);
    t.preprocess += now() - t0;
    t0 = now();
    const out = await this.palm.run(this.palmInput);
    t.palm += now() - t0;
    t0 = now();
    const [boxes, scores] = outputsBySize(out, [this.anchors.length * 9, this.anchors.length / 2]);
    const best = weightedNms(decodePalms(boxes, scores, this.anchors))[0];
    t.postprocess += now() - t0;
    return best ? palmToHandRoi(best, letterbox) : null;
  }

  // [screen, presence, handedness, world or null] of the landmark model's outputs.
  landmarkArrays(out) {
    if (this.landmarkOutputs) {
      const arrays = this.landmarkOutputs.map((n) => {
        if (!(n in out)) throw new Error(`landmark model has no output ${n}`);
        return out[n].data ?? out[n];
      });
      return arrays.length > 3 ? arrays : [...arrays, null];
    }
    const sized = Object.values(out).filter((o) => (o.data ?? o).length === 63).length;
    return sized > 1 ? outputsBySize(out, [63, 1, 1, 63]) : [...outputsBySize(out, [63, 1, 1]), null];
  }

  /**
   * Track the hand in one frame {rgba, width, height}. Returns {hand | null, roi, palm,
   * detected, timings: {preprocess, palm, landmarks, postprocess} (ms), crop?}.
   */
  async process(frame) {
    const t = { preprocess: 0, palm: 0, landmarks: 0, postprocess: 0 };
    let palm = null;
    let detected = false;
    if (!this.roi) {
      detected = true;
      const found = await this.detectPalm(frame, t);
      if (!found) return { hand: null, roi: null, palm: null, detected, timings: t };
      palm = found.palm;
      this.roi = found.roi;
    }
    const roi = this.roi;
    this.landmark.wake?.();
    let t0 = now();
    const crop = cropToTensor(frame.rgba, frame.width, frame.height, roi, LANDMARK_INPUT, "replicate", this.landmarkInput);
    t.preprocess += now() - t0;
    t0 = now();
    const out = await this.landmark.run(crop);
    t.landmarks += now() - t0;
    t0 = now();
    const [screen, presence, handedness, world] = this.landmarkArrays(out);
    const hand = decodeLandmarks(screen, presence[0], handedness[0], roi);
    if (world) hand.world = decodeWorldLandmarks(world, roi);
    const found = hand.presence >= this.minPresence;
    // Lost: forget the ROI so that the next frame runs palm detection again.
    this.roi = found ? landmarksToRoi(hand.landmarks) : null;
    t.postprocess += now() - t0;
    const result = { hand: found ? hand : null, presence: hand.presence, roi, palm, detected, timings: t };
    if (this.keepCrops) {
      result.crop = crop.slice(); // a copy: it is transferred to the page
      result.raw = { screen: Array.from(screen), presence: presence[0], handedness: handedness[0] };
    }
    return result;
  }
}
