// Palm detection post-processing, as MediaPipe's palm detector is configured:
// SSD anchors, box + 7 keypoint decoding, sigmoid scores, weighted non-max suppression,
// and the palm -> hand region of interest (rotated square).
//
// Coordinates: detections come out normalised to the model's square input (0..1); the
// caller maps them to image pixels with the letterbox it used (see letterboxRoi).

export const PALM_INPUT = 192;

// The anchor configuration of MediaPipe's palm detector (palm_detection_full/lite).
export const PALM_ANCHORS = {
  inputSize: PALM_INPUT,
  strides: [8, 16, 16, 16],
  anchorOffset: 0.5,
  // One aspect ratio (1.0) plus the interpolated-scale anchor: 2 anchors per layer and
  // cell. Anchor sizes are fixed (1x1), so only the centres matter.
  anchorsPerLayer: 2,
};

export const PALM_DECODE = {
  numKeypoints: 7,
  coordsPerAnchor: 18, // box (4) + 7 keypoints (x, y)
  scale: PALM_INPUT, // x/y/w/h scales
  scoreClip: 100,
  minScore: 0.5,
  nmsIoU: 0.3,
};

// Palm keypoints used for the hand's rotation (wrist centre -> middle finger base), and
// how the palm box grows into the hand's region of interest.
export const PALM_TO_HAND = { startKeypoint: 0, endKeypoint: 2, targetAngle: Math.PI / 2, scale: 2.6, shiftY: -0.5 };

/** Anchor centres as a Float32Array [x0, y0, x1, y1, ...] (normalised), 2016 for the palm model. */
export function ssdAnchors(cfg = PALM_ANCHORS) {
  const centres = [];
  const { strides, inputSize, anchorOffset, anchorsPerLayer } = cfg;
  for (let layer = 0; layer < strides.length;) {
    // Consecutive layers with the same stride share one feature map.
    let last = layer;
    while (last < strides.length && strides[last] === strides[layer]) last++;
    const perCell = anchorsPerLayer * (last - layer);
    const side = Math.ceil(inputSize / strides[layer]);
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        for (let k = 0; k < perCell; k++) centres.push((x + anchorOffset) / side, (y + anchorOffset) / side);
      }
    }
    layer = last;
  }
  return Float32Array.from(centres);
}

const sigmoid = (v) => 1 / (1 + Math.exp(-v));

/**
 * Decode raw palm model outputs into detections above cfg.minScore.
 * boxes: Float32Array [N * 18], scores: Float32Array [N] (logits), anchors: from ssdAnchors.
 * Each detection: {score, cx, cy, w, h, keypoints: [[x, y] * 7]} normalised to the input.
 */
export function decodePalms(boxes, scores, anchors, cfg = PALM_DECODE) {
  const n = anchors.length / 2;
  if (scores.length !== n || boxes.length !== n * cfg.coordsPerAnchor) {
    throw new Error(`palm outputs do not match ${n} anchors: ${boxes.length} box values, ${scores.length} scores`);
  }
  const out = [];
  for (let i = 0; i < n; i++) {
    const raw = Math.min(cfg.scoreClip, Math.max(-cfg.scoreClip, scores[i]));
    const score = sigmoid(raw);
    if (score < cfg.minScore) continue;
    const ax = anchors[2 * i], ay = anchors[2 * i + 1];
    const b = i * cfg.coordsPerAnchor;
    const keypoints = [];
    for (let k = 0; k < cfg.numKeypoints; k++) {
      keypoints.push([boxes[b + 4 + 2 * k] / cfg.scale + ax, boxes[b + 5 + 2 * k] / cfg.scale + ay]);
    }
    out.push({
      score,
      cx: boxes[b] / cfg.scale + ax,
      cy: boxes[b + 1] / cfg.scale + ay,
      w: boxes[b + 2] / cfg.scale,
      h: boxes[b + 3] / cfg.scale,
      keypoints,
    });
  }
  return out;
}

function iou(a, b) {
  const ix = Math.min(a.cx + a.w / 2, b.cx + b.w / 2) - Math.max(a.cx - a.w / 2, b.cx - b.w / 2);
  const iy = Math.min(a.cy + a.h / 2, b.cy + b.h / 2) - Math.max(a.cy - a.h / 2, b.cy - b.h / 2);
  if (ix <= 0 || iy <= 0) return 0;
  const inter = ix * iy;
  return inter / (a.w * a.h + b.w * b.h - inter);
}

/**
 * Weighted non-max suppression: the best remaining detection absorbs every detection that
 * overlaps it by more than `threshold` IoU; its box and keypoints become their
 * score-weighted mean, its score stays the best one's. Returns detections, best first.
 */
export function weightedNms(detections, threshold = PALM_DECODE.nmsIoU) {
  let rest = [...detections].sort((a, b) => b.score - a.score);
  const kept = [];
  while (rest.length) {
    const top = rest[0];
    const group = rest.filter((d) => iou(top, d) > threshold || d === top);
    rest = rest.filter((d) => !group.includes(d));
    let total = 0;
    const m = { score: top.score, cx: 0, cy: 0, w: 0, h: 0, keypoints: top.keypoints.map(() => [0, 0]) };
    for (const d of group) {
      total += d.score;
      m.cx += d.score * d.cx; m.cy += d.score * d.cy; m.w += d.score * d.w; m.h += d.score * d.h;
      d.keypoints.forEach(([x, y], k) => { m.keypoints[k][0] += d.score * x; m.keypoints[k][1] += d.score * y; });
    }
    m.cx /= total; m.cy /= total; m.w /= total; m.h /= total;
    for (const kp of m.keypoints) { kp[0] /= total; kp[1] /= total; }
    kept.push(m);
  }
  return kept;
}

/**
 * The square, unrotated region that letterboxes a width x height image into the palm
 * model's input (the image centred, zero bars on the short side): {cx, cy, size, rotation}
 * in image pixels, the same shape of region as a hand ROI.
 */
export function letterboxRoi(width, height) {
  return { cx: width / 2, cy: height / 2, size: Math.max(width, height), rotation: 0 };
}

/** Map a point normalised to an unrotated ROI's square back to image pixels. */
function fromLetterbox(roi, x, y) {
  return [roi.cx + (x - 0.5) * roi.size, roi.cy + (y - 0.5) * roi.size];
}

/** Angle in [-pi, pi). */
export function normalizeAngle(a) {
  return a - 2 * Math.PI * Math.floor((a + Math.PI) / (2 * Math.PI));
}

/** Rotation that turns the direction from (x0, y0) to (x1, y1) upright (image y points down). */
export function uprightRotation(x0, y0, x1, y1, target = Math.PI / 2) {
  return normalizeAngle(target - Math.atan2(-(y1 - y0), x1 - x0));
}

/**
 * Grow a rotated box into a square ROI: shift it along its own axes (fractions of its
 * width/height), scale it, and take the long side (MediaPipe's rect transformation).
 */
export function transformRect({ cx, cy, w, h, rotation }, { scale, shiftX = 0, shiftY = 0 }) {
  const c = Math.cos(rotation), s = Math.sin(rotation);
  const dx = w * shiftX, dy = h * shiftY;
  return { cx: cx + dx * c - dy * s, cy: cy + dx * s + dy * c, size: Math.max(w, h) * scale, rotation };
}

/**
 * A palm detection (normalised to the palm input) -> the detection in image pixels and
 * the hand's ROI {cx, cy, size, rotation} in image pixels.
 */
export function palmToHandRoi(det, letterbox, cfg = PALM_TO_HAND) {
  const keypoints = det.keypoints.map(([x, y]) => fromLetterbox(letterbox, x, y));
  const [cx, cy] = fromLetterbox(letterbox, det.cx, det.cy);
  const w = det.w * letterbox.size, h = det.h * letterbox.size;
  const [x0, y0] = keypoints[cfg.startKeypoint];
  const [x1, y1] = keypoints[cfg.endKeypoint];
  const rotation = uprightRotation(x0, y0, x1, y1, cfg.targetAngle);
  const roi = transformRect({ cx, cy, w, h, rotation }, { scale: cfg.scale, shiftY: cfg.shiftY });
  return { palm: { score: det.score, cx, cy, w, h, keypoints }, roi };
}
