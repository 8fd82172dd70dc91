// The hand pipeline's arithmetic (web/hands/palm.mjs, web/hands/landmarks.mjs) under `node --test`:
// anchors, decoding, weighted NMS, rotations, crops and ROIs on cases whose answers are
// known in closed form.
import assert from "node:assert/strict";
import test from "node:test";

import {
  PALM_DECODE, decodePalms, letterboxRoi, normalizeAngle, palmToHandRoi, ssdAnchors, transformRect,
  uprightRotation, weightedNms,
} from "../../web/hands/palm.mjs";
import { cropToTensor, decodeLandmarks, landmarksToRoi, roiPixelRect, roiToImage } from "../../web/hands/landmarks.mjs";

const close = (a, b, tol = 1e-6, what = "") => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} != ${b}`);

test("palm anchors: 24x24x2 at stride 8, then 12x12x6 for the three stride-16 layers", () => {
  const a = ssdAnchors();
  assert.equal(a.length / 2, 2016);
  close(a[0], 0.5 / 24); close(a[1], 0.5 / 24);
  close(a[2], 0.5 / 24); // two anchors per cell at stride 8
  close(a[4], 1.5 / 24);
  const k = 24 * 24 * 2; // first stride-16 anchor, six per cell
  close(a[2 * k], 0.5 / 12); close(a[2 * (k + 5)], 0.5 / 12); close(a[2 * (k + 6)], 1.5 / 12);
  close(a[a.length - 2], 11.5 / 12); close(a[a.length - 1], 11.5 / 12);
});

test("palm decoding: offsets in input pixels from the anchor centre, sigmoid scores, threshold", () => {
  const anchors = Float32Array.from([0.25, 0.5, 0.75, 0.75]);
  const boxes = new Float32Array(2 * 18);
  boxes.set([19.2, -9.6, 48, 96], 0); // cx +0.1, cy -0.05, w 0.25, h 0.5
  boxes[4] = 9.6; boxes[5] = 19.2; // keypoint 0: +0.05, +0.1
  const scores = Float32Array.from([2, -3]);
  const d = decodePalms(boxes, scores, anchors);
  assert.equal(d.length, 1);
  close(d[0].score, 1 / (1 + Math.exp(-2)));
  close(d[0].cx, 0.35, 1e-6); close(d[0].cy, 0.45, 1e-6); close(d[0].w, 0.25); close(d[0].h, 0.5);
  close(d[0].keypoints[0][0], 0.3, 1e-6); close(d[0].keypoints[0][1], 0.6, 1e-6);
  close(d[0].keypoints[1][0], 0.25); // a zero offset sits on the anchor
  assert.throws(() => decodePalms(boxes, new Float32Array(3), anchors), /do not match/);
  // Scores are clipped before the sigmoid, as MediaPipe's palm detector does.
  const huge = decodePalms(boxes, Float32Array.from([1e9, -1e9]), anchors);
  close(huge[0].score, 1 / (1 + Math.exp(-PALM_DECODE.scoreClip)));
});

test("weighted NMS: overlapping boxes merge into their score-weighted mean; others stay", () => {
  const kp = (x) => Array.from({ length: 7 }, () => [x, x]);
  const dets = [
    { score: 0.6, cx: 0.52, cy: 0.5, w: 0.2, h: 0.2, keypoints: kp(0.2) },
    { score: 0.9, cx: 0.5, cy: 0.5, w: 0.2, h: 0.2, keypoints: kp(0.1) },
    { score: 0.7, cx: 0.1, cy: 0.1, w: 0.1, h: 0.1, keypoints: kp(0.9) },
  ];
  const out = weightedNms(dets, 0.3);
  assert.equal(out.length, 2);
  close(out[0].score, 0.9);
  close(out[0].cx, (0.9 * 0.5 + 0.6 * 0.52) / 1.5, 1e-9);
  close(out[0].keypoints[3][0], (0.9 * 0.1 + 0.6 * 0.2) / 1.5, 1e-9);
  close(out[1].cx, 0.1);
});

test("rotation: a hand pointing up needs none; pointing right needs +90 degrees", () => {
  close(uprightRotation(0, 10, 0, 0), 0);
  close(uprightRotation(0, 0, 10, 0), Math.PI / 2);
  close(uprightRotation(0, 0, -10, 0), -Math.PI / 2);
  close(normalizeAngle(3 * Math.PI / 2), -Math.PI / 2);
});

test("palm -> hand ROI: shifted up its own axis by half the box, 2.6x, square", () => {
  const lb = letterboxRoi(640, 480); // 640x640 square, 80 px bars top and bottom
  const det = { score: 0.9, cx: 0.5, cy: 0.5, w: 0.1, h: 0.1,
    keypoints: [[0.5, 0.55], [0, 0], [0.5, 0.45], [0, 0], [0, 0], [0, 0], [0, 0]] };
  const { palm, roi } = palmToHandRoi(det, lb);
  close(palm.cx, 320, 1e-9); close(palm.cy, 240, 1e-9); close(palm.keypoints[0][1], 0.55 * 640 - 80, 1e-9);
  close(roi.rotation, 0, 1e-12);
  close(roi.cx, 320, 1e-9); close(roi.cy, 240 - 0.5 * 64, 1e-9); close(roi.size, 64 * 2.6, 1e-9);
  // Rotated by 90 degrees, "up" in the hand's frame is +x in the image.
  const r = transformRect({ cx: 0, cy: 0, w: 10, h: 20, rotation: Math.PI / 2 }, { scale: 1, shiftY: -0.5 });
  close(r.cx, 10, 1e-9); close(r.cy, 0, 1e-9); close(r.size, 20);
});

function image(width, height) {
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = 4 * (y * width + x);
      rgba[o] = x * 10; rgba[o + 1] = y * 10; rgba[o + 2] = 7; rgba[o + 3] = 255;
    }
  }
  return rgba;
}

test("crops: the whole image at its own size is the image, planar, /255", () => {
  const rgba = image(6, 6);
  const t = cropToTensor(rgba, 6, 6, { cx: 3, cy: 3, size: 6, rotation: 0 }, 6);
  for (let y = 0; y < 6; y++) {
    for (let x = 0; x < 6; x++) {
      close(t[y * 6 + x], (x * 10) / 255, 1e-6, "r");
      close(t[36 + y * 6 + x], (y * 10) / 255, 1e-6, "g");
      close(t[72 + y * 6 + x], 7 / 255, 1e-6, "b");
    }
  }
});

test("crops: rotation by 90 degrees turns the image; letterbox bars are zero", () => {
  const rgba = image(6, 6);
  const t = cropToTensor(rgba, 6, 6, { cx: 3, cy: 3, size: 6, rotation: Math.PI / 2 }, 6);
  // Output (i, j) samples the image at (5 - j, i): the red channel follows the image's x.
  for (let j = 0; j < 6; j++) for (let i = 0; i < 6; i++) close(t[j * 6 + i], ((5 - j) * 10) / 255, 1e-5);
  const wide = image(6, 2);
  const lb = cropToTensor(wide, 6, 2, letterboxRoi(6, 2), 6, "zero");
  for (const row of [0, 1, 4, 5]) for (let i = 0; i < 6; i++) assert.equal(lb[72 + row * 6 + i], 0);
  close(lb[72 + 2 * 6], 7 / 255, 1e-6);
  const rep = cropToTensor(wide, 6, 2, letterboxRoi(6, 2), 6, "replicate");
  close(rep[72], 7 / 255, 1e-6);
});

// Bilinear sampling written the plain way (one output value at a time, every tap clamped or
// zeroed): what cropToTensor's row fast paths must reproduce.
function plainCrop(rgba, width, height, roi, out, border) {
  const t = new Float32Array(3 * out * out);
  const step = roi.size / out, c = Math.cos(roi.rotation), s = Math.sin(roi.rotation);
  const tap = (x, y, ch) => {
    if (border === "zero" && (x < 0 || x >= width || y < 0 || y >= height)) return 0;
    x = Math.min(width - 1, Math.max(0, x)); y = Math.min(height - 1, Math.max(0, y));
    return rgba[4 * (y * width + x) + ch];
  };
  for (let j = 0; j < out; j++) {
    for (let i = 0; i < out; i++) {
      const u = (i + 0.5 - out / 2) * step, v = (j + 0.5 - out / 2) * step;
      const x = roi.cx + u * c - v * s - 0.5, y = roi.cy + u * s + v * c - 0.5;
      const x0 = Math.floor(x), y0 = Math.floor(y), fx = x - x0, fy = y - y0;
      for (let ch = 0; ch < 3; ch++) {
        t[ch * out * out + j * out + i] = ((1 - fx) * (1 - fy) * tap(x0, y0, ch) + fx * (1 - fy) * tap(x0 + 1, y0, ch) +
          (1 - fx) * fy * tap(x0, y0 + 1, ch) + fx * fy * tap(x0 + 1, y0 + 1, ch)) / 255;
      }
    }
  }
  return t;
}

function noise(width, height, seed) {
  const rgba = new Uint8ClampedArray(width * height * 4);
  let h = seed >>> 0;
  for (let i = 0; i < rgba.length; i++) { h = (Math.imul(h, 1664525) + 1013904223) >>> 0; rgba[i] = h >>> 24; }
  return rgba;
}

const ROIS = [
  { cx: 30, cy: 25, size: 20, rotation: 0.3 }, // inside: every row on the fast path
  { cx: 55, cy: 5, size: 30, rotation: -2.1 }, // past two edges
  { cx: 32, cy: 24, size: 64, rotation: 0 }, // a letterbox: rows wholly outside
  { cx: -30, cy: 60, size: 20, rotation: 1 }, // wholly outside
];

test("crops: the row fast paths equal plain bilinear sampling, both borders", () => {
  const rgba = noise(64, 48, 7);
  for (const roi of ROIS) {
    for (const border of ["zero", "replicate"]) {
      for (const out of [16, 9]) {
        const want = plainCrop(rgba, 64, 48, roi, out, border);
        // A reused destination holding stale values must be overwritten everywhere.
        const got = cropToTensor(rgba, 64, 48, roi, out, border, new Float32Array(3 * out * out).fill(9));
        for (let k = 0; k < want.length; k++) close(got[k], want[k], 1e-5, `${JSON.stringify(roi)} ${border} ${out} [${k}]`);
      }
    }
  }
});

test("crops: only the pixels of roiPixelRect are read", () => {
  const rgba = noise(64, 48, 11);
  for (const roi of ROIS.slice(0, 3)) {
    const rect = roiPixelRect(roi, 64, 48);
    assert.ok(rect && rect.x >= 0 && rect.y >= 0 && rect.x + rect.width <= 64 && rect.y + rect.height <= 48);
    // Everything outside the rectangle replaced by other values: the crop does not change.
    const other = noise(64, 48, 99);
    for (let y = rect.y; y < rect.y + rect.height; y++) {
      const from = 4 * (y * 64 + rect.x);
      other.set(rgba.subarray(from, from + 4 * rect.width), from);
    }
    const want = cropToTensor(rgba, 64, 48, roi, 24, "replicate");
    const got = cropToTensor(other, 64, 48, roi, 24, "replicate");
    assert.deepEqual(got, want, JSON.stringify(roi));
  }
  assert.equal(roiPixelRect(ROIS[3], 64, 48), null); // off the image: the caller reads it all
});

test("landmarks: crop pixels map through the ROI; the ROI of landmarks encloses them", () => {
  const roi = { cx: 100, cy: 50, size: 224, rotation: Math.PI / 2 };
  const screen = new Float32Array(63);
  screen[0] = 112; screen[1] = 112; // landmark 0 at the crop centre
  screen[3] = 112; screen[4] = 0; // landmark 1 at the crop's top edge: +x in the image
  const { landmarks, label } = decodeLandmarks(screen, 0.9, 0.2, roi);
  close(landmarks[0][0], 100, 1e-9); close(landmarks[0][1], 50, 1e-9);
  close(landmarks[1][0], 212, 1e-9); close(landmarks[1][1], 50, 1e-9);
  assert.equal(label, "Right");
  const [x, y] = roiToImage({ cx: 0, cy: 0, size: 2, rotation: 0 }, 1, 1);
  close(x, 1); close(y, 1);
  // An upright hand: wrist below the finger bases.
  const pts = Array.from({ length: 21 }, () => [50, 50, 0]);
  pts[0] = [50, 100, 0]; pts[5] = [40, 60, 0]; pts[9] = [50, 55, 0]; pts[13] = [60, 60, 0];
  pts[17] = [70, 65, 0]; pts[1] = [30, 90, 0];
  const r = landmarksToRoi(pts);
  close(r.rotation, 0, 1e-9);
  // Box of the chosen landmarks: x 30..70, y 50..100 -> centre (50, 75), 40x50; shifted
  // up by 0.1 of its height, doubled on its long side.
  close(r.cx, 50, 1e-9); close(r.cy, 75 - 5, 1e-9); close(r.size, 100, 1e-9);
});
