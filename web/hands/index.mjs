// HandLandmarker: 21 hand landmarks per video frame from two packed models (palm detection
// and hand landmarks, dense or sparse), with the calls of MediaPipe Tasks' HandLandmarker:
//
//   import { HandLandmarker } from 'pysparse/hands';
//   const hands = await HandLandmarker.createFromOptions({
//     palmModel: '/models/palm_detection_full.spnn', landmarkModel: '/models/hand_landmark_full.spnn' });
//   const result = await hands.detectForVideo(video, performance.now());
//   // result.landmarks[0][8] = {x, y, z}: the index finger tip, x and y normalised to the frame
//
// Palm detection finds the hand; from then on the landmarks of one frame give the region the
// landmark model looks at in the next (tracking), until the hand presence drops below
// minHandPresenceConfidence. One hand is tracked. The pipeline itself is ./tracker.mjs.

import { load, loadInWorker } from '../pysparse.mjs';
import { isImageDataLike, sourceSize } from '../pixels.mjs';
import { MIN_PRESENCE, HandTracker } from './tracker.mjs';

export { HandTracker } from './tracker.mjs';

// The MediaPipe hand landmark model's outputs: screen landmarks, presence, handedness, world landmarks.
const LANDMARK_OUTPUT_NAMES = ['Identity', 'Identity_1', 'Identity_2', 'Identity_3'];

function isLoadedModel(m) {
  return m !== null && typeof m === 'object' && typeof m.run === 'function' && Array.isArray(m.inputs);
}

function category(handedness) {
  // The model's score is for MediaPipe's "Left" label (which assumes a mirrored, selfie-view frame).
  const left = handedness > 0.5;
  const label = left ? 'Left' : 'Right';
  return { score: left ? handedness : 1 - handedness, index: left ? 0 : 1, categoryName: label, displayName: label };
}

export class HandLandmarker {
  #tracker;
  #owned; // the models this object loaded (and so frees)
  #lastTimestamp = -Infinity;
  #canvas = null;
  #busy = false;

  /**
   * Loads the models and makes a HandLandmarker.
   * options.palmModel, options.landmarkModel: each a model URL, its bytes, or a model already
   * loaded with load() / loadInWorker() (shared models are not freed by close()).
   * options.threads, variant, locateFile: as load(); options.worker: run the models in a
   * worker (loadInWorker, with options.workerUrl); options.minHandPresenceConfidence
   * (default 0.5).
   */
  static async createFromOptions(options = {}) {
    const { palmModel, landmarkModel, worker = false } = options;
    if (!palmModel || !landmarkModel) {
      throw new Error('HandLandmarker.createFromOptions needs palmModel and landmarkModel (URLs, bytes or loaded models)');
    }
    const loadOptions = {};
    for (const key of ['threads', 'variant', 'locateFile', 'workerUrl']) {
      if (options[key] !== undefined) loadOptions[key] = options[key];
    }
    const owned = [];
    const get = async (source) => {
      if (isLoadedModel(source)) return source;
      const model = await (worker ? loadInWorker : load)(source, loadOptions);
      owned.push(model);
      return model;
    };
    try {
      // One after the other: a threaded engine readies its workers for one load at a time.
      const palm = await get(palmModel);
      const landmark = await get(landmarkModel);
      return new HandLandmarker(palm, landmark, options, owned);
    } catch (e) {
      await Promise.all(owned.map((m) => m.dispose()));
      throw e;
    }
  }

  /** From loaded models; prefer createFromOptions(). */
  constructor(palm, landmark, options = {}, owned = []) {
    const names = landmark.outputs.map((o) => o.name);
    const landmarkOutputs = LANDMARK_OUTPUT_NAMES.every((n) => names.includes(n)) ? LANDMARK_OUTPUT_NAMES : null;
    this.#tracker = new HandTracker(palm, landmark, {
      landmarkOutputs,
      keepCrops: !!options.keepCrops,
      minPresence: options.minHandPresenceConfidence ?? MIN_PRESENCE,
    });
    this.#owned = owned;
    this.palmModel = palm;
    this.landmarkModel = landmark;
  }

  /** The region the landmark model will look at next ({cx, cy, size, rotation} in pixels), or null. */
  get roi() {
    return this.#tracker.roi;
  }

  /**
   * Landmarks of the hand in a video frame, tracked from the previous frame. `frame`: an
   * ImageData (or {data, width, height} RGBA), canvas, OffscreenCanvas, video, image,
   * ImageBitmap or VideoFrame; `timestamp` (ms) must grow from call to call.
   */
  async detectForVideo(frame, timestamp) {
    if (!(Number(timestamp) > this.#lastTimestamp)) {
      throw new Error(`timestamps must increase from frame to frame: ${timestamp} after ${this.#lastTimestamp}`);
    }
    this.#lastTimestamp = Number(timestamp);
    return this.#run(frame);
  }

  /** Landmarks of the hand in one still image (palm detection every time; tracking state kept). */
  async detect(image) {
    const saved = this.#tracker.roi;
    this.#tracker.reset();
    try {
      return await this.#run(image);
    } finally {
      this.#tracker.roi = saved;
    }
  }

  /** Forgets the tracked hand (a new video source): the next frame runs palm detection. */
  reset() {
    this.#tracker.reset();
    this.#lastTimestamp = -Infinity;
  }

  /** Frees the models this object loaded. */
  async close() {
    const owned = this.#owned;
    this.#owned = [];
    await Promise.all(owned.map((m) => m.dispose()));
  }

  async #run(source) {
    if (this.#busy) throw new Error('one frame at a time: await the previous detectForVideo() first');
    this.#busy = true;
    try {
      const frame = this.#pixels(source);
      const details = await this.#tracker.process(frame);
      return HandLandmarker.toResult(details, frame.width, frame.height);
    } finally {
      this.#busy = false;
    }
  }

  // {rgba, width, height} of any frame source.
  #pixels(source) {
    if (isImageDataLike(source)) return { rgba: source.data, width: source.width, height: source.height };
    const { width, height } = sourceSize(source);
    if (!(width > 0 && height > 0)) throw new Error('the frame has no pixels (not loaded yet?)');
    if (!this.#canvas) {
      if (typeof OffscreenCanvas === 'function') this.#canvas = new OffscreenCanvas(width, height);
      else if (typeof document === 'object') this.#canvas = document.createElement('canvas');
      else throw new Error('frames other than ImageData need a canvas (OffscreenCanvas or a DOM)');
    }
    if (this.#canvas.width !== width) this.#canvas.width = width;
    if (this.#canvas.height !== height) this.#canvas.height = height;
    const ctx = this.#canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(source, 0, 0, width, height);
    return { rgba: ctx.getImageData(0, 0, width, height).data, width, height };
  }

  /** A tracker result -> MediaPipe's HandLandmarkerResult shape, plus presence and details. */
  static toResult(details, width, height) {
    const hand = details.hand;
    const hands = hand ? [hand] : [];
    const handedness = hands.map((h) => [category(h.handedness)]);
    return {
      landmarks: hands.map((h) => h.landmarks.map(([x, y, z]) => ({ x: x / width, y: y / height, z: z / width }))),
      worldLandmarks: hands.map((h) => (h.world ?? []).map(([x, y, z]) => ({ x, y, z }))),
      handedness,
      handednesses: handedness,
      presence: hands.map((h) => h.presence),
      details,
    };
  }
}
