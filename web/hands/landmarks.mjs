// Image -> model input crops, and hand landmark model outputs -> landmarks in the frame.
//
// A region of interest (ROI) is a rotated square {cx, cy, size, rotation} in image pixels;
// rotation turns the crop so that the hand points up in it.

export const LANDMARK_INPUT = 224;
export const NUM_LANDMARKS = 21;

// How landmarks become the next frame's ROI: the rotation from the wrist towards the
// middle of the palm's finger bases, the box of the palm and finger-base landmarks,
// grown by `scale` and shifted along the hand (MediaPipe's landmarks -> ROI).
export const LANDMARKS_TO_ROI = {
  wrist: 0, indexMcp: 5, middleMcp: 9, ringMcp: 13,
  boxLandmarks: [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18],
  scale: 2.0, shiftY: -0.1, targetAngle: Math.PI / 2,
};

/**
 * Sample the ROI of an RGBA image into a planar float tensor [1, 3, out, out] with values
 * pixel / 255 (the [0, 1] range both hand models take). Bilinear; outside the image
 * `border` "zero" gives black, "replicate" the nearest edge pixel. `dest` (reused between
 * frames) saves allocating the tensor on every call.
 */
export function cropToTensor(rgba, width, height, roi, out, border = "replicate", dest = null) {
  const plane = out * out;
  const t = dest ?? new Float32Array(3 * plane);
  const step = roi.size / out;
  const c = Math.cos(roi.rotation) * step, s = Math.sin(roi.rotation) * step;
  // Image position (pixel centres at k + 0.5) of output pixel (0, 0)'s centre, and its steps.
  const half = out / 2 - 0.5;
  let rowX = roi.cx - c * half + s * half - 0.5;
  let rowY = roi.cy - s * half - c * half - 0.5;
  const zero = border === "zero";
  const maxX = width - 1, maxY = height - 1;
  const last = out - 1;
  const px = pixelWords(rgba);
  for (let j = 0; j < out; j++, rowX -= s, rowY += c) {
    // A row's sample positions lie on a segment: when both of its ends have all four taps
    // inside the image, so do all of its samples (the common case: no clamping needed);
    // with zero borders, a row whose every tap is outside is all black.
    const endX = rowX + c * last, endY = rowY + s * last;
    const o = j * out;
    if (rowX >= 0 && rowX < maxX && rowY >= 0 && rowY < maxY && endX >= 0 && endX < maxX && endY >= 0 && endY < maxY) {
      cropRowInside(px, width, rowX, rowY, c, s, out, t, o, plane);
    } else if (zero && ((rowX <= -1 && endX <= -1) || (rowX >= width && endX >= width) ||
                        (rowY <= -1 && endY <= -1) || (rowY >= height && endY >= height))) {
      t.fill(0, o, o + out);
      t.fill(0, plane + o, plane + o + out);
      t.fill(0, 2 * plane + o, 2 * plane + o + out);
    } else {
      cropRowClamped(rgba, width, height, rowX, rowY, c, s, out, t, o, plane, zero);
    }
  }
  return t;
}

// The RGBA bytes as one 32-bit word per pixel: a view (cached per buffer, which the worker
// reuses between frames), or a copy where the bytes are not 4-aligned.
const wordViews = new WeakMap();
function pixelWords(rgba) {
  if (rgba.byteOffset % 4 !== 0) return new Uint32Array(new Uint8Array(rgba).buffer);
  let v = wordViews.get(rgba);
  if (!v || v.buffer !== rgba.buffer) {
    v = new Uint32Array(rgba.buffer, rgba.byteOffset, rgba.length >> 2);
    wordViews.set(rgba, v);
  }
  return v;
}

// One output row whose taps are all inside the image: no clamping; each tap one 32-bit
// read of its RGBA pixel (little-endian: red in the low byte), then a two-step lerp.
function cropRowInside(px, width, x, y, c, s, out, t, o, plane) {
  const inv = 1 / 255;
  const p2 = 2 * plane;
  for (let i = 0; i < out; i++, x += c, y += s) {
    const x0 = x | 0, y0 = y | 0; // x, y >= 0: truncation is the floor
    const fx = x - x0, fy = y - y0;
    const p = y0 * width + x0, q = p + width;
    const A = px[p], B = px[p + 1], U = px[q], V = px[q + 1];
    let a = A & 255, b = B & 255, u = U & 255, v = V & 255;
    let top = a + (b - a) * fx, bot = u + (v - u) * fx;
    t[o + i] = (top + (bot - top) * fy) * inv;
    a = (A >>> 8) & 255; b = (B >>> 8) & 255; u = (U >>> 8) & 255; v = (V >>> 8) & 255;
    top = a + (b - a) * fx; bot = u + (v - u) * fx;
    t[plane + o + i] = (top + (bot - top) * fy) * inv;
    a = (A >>> 16) & 255; b = (B >>> 16) & 255; u = (U >>> 16) & 255; v = (V >>> 16) & 255;
    top = a + (b - a) * fx; bot = u + (v - u) * fx;
    t[p2 + o + i] = (top + (bot - top) * fy) * inv;
  }
}

// One output row that reaches past the image's edges: taps clamped (replicate) or zeroed.
function cropRowClamped(rgba, width, height, x, y, c, s, out, t, o, plane, zero) {
  const maxX = width - 1, maxY = height - 1;
  const inv = 1 / 255;
  for (let i = 0; i < out; i++, x += c, y += s) {
    let x0 = Math.floor(x), y0 = Math.floor(y);
    const fx = x - x0, fy = y - y0;
    let x1 = x0 + 1, y1 = y0 + 1;
    let w00 = (1 - fx) * (1 - fy), w01 = fx * (1 - fy), w10 = (1 - fx) * fy, w11 = fx * fy;
    if (zero) {
      // Taps outside the image count as black.
      if (x0 < 0 || x0 > maxX) { w00 = 0; w10 = 0; }
      if (x1 < 0 || x1 > maxX) { w01 = 0; w11 = 0; }
      if (y0 < 0 || y0 > maxY) { w00 = 0; w01 = 0; }
      if (y1 < 0 || y1 > maxY) { w10 = 0; w11 = 0; }
    }
    x0 = x0 < 0 ? 0 : x0 > maxX ? maxX : x0;
    x1 = x1 < 0 ? 0 : x1 > maxX ? maxX : x1;
    y0 = y0 < 0 ? 0 : y0 > maxY ? maxY : y0;
    y1 = y1 < 0 ? 0 : y1 > maxY ? maxY : y1;
    const p00 = (y0 * width + x0) * 4, p01 = (y0 * width + x1) * 4;
    const p10 = (y1 * width + x0) * 4, p11 = (y1 * width + x1) * 4;
    for (let ch = 0; ch < 3; ch++) {
      t[ch * plane + o + i] = (rgba[p00 + ch] * w00 + rgba[p01 + ch] * w01 + rgba[p10 + ch] * w10 + rgba[p11 + ch] * w11) * inv;
    }
  }
}

/**
 * The pixels cropToTensor reads for a ROI: the integer rectangle {x, y, width, height}
 * holding its rotated square and every bilinear tap (clamped to the image), or null when
 * the square lies wholly outside the image (then only edge pixels are read: take them all).
 */
export function roiPixelRect(roi, width, height) {
  const r = (roi.size / 2) * (Math.abs(Math.cos(roi.rotation)) + Math.abs(Math.sin(roi.rotation)));
  // Taps sit at floor(p - 0.5) and one past it: one pixel of margin each side covers them.
  const x0 = Math.max(0, Math.floor(roi.cx - r) - 1), x1 = Math.min(width, Math.ceil(roi.cx + r) + 1);
  const y0 = Math.max(0, Math.floor(roi.cy - r) - 1), y1 = Math.min(height, Math.ceil(roi.cy + r) + 1);
  if (!(x1 > x0 && y1 > y0)) return null;
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}

/** A point in the ROI's own square, normalised (0..1), -> image pixels. */
export function roiToImage(roi, u, v) {
  const c = Math.cos(roi.rotation), s = Math.sin(roi.rotation);
  const x = (u - 0.5) * roi.size, y = (v - 0.5) * roi.size;
  return [roi.cx + x * c - y * s, roi.cy + x * s + y * c];
}

/**
 * Landmark model outputs -> {landmarks: [[x, y, z] * 21] in image pixels (z in the same
 * units, relative to the wrist), presence, handedness, label}. handedness is the model's
 * score for MediaPipe's "Left" label; like MediaPipe's, the labels assume a mirrored
 * (selfie-view) image. screen: Float32Array(63) in crop pixels; presence and handedness
 * are already probabilities.
 */
export function decodeLandmarks(screen, presence, handedness, roi, inputSize = LANDMARK_INPUT) {
  if (screen.length !== NUM_LANDMARKS * 3) throw new Error(`expected ${NUM_LANDMARKS * 3} landmark values, got ${screen.length}`);
  const landmarks = [];
  for (let k = 0; k < NUM_LANDMARKS; k++) {
    const [x, y] = roiToImage(roi, screen[3 * k] / inputSize, screen[3 * k + 1] / inputSize);
    landmarks.push([x, y, (screen[3 * k + 2] / inputSize) * roi.size]);
  }
  return { landmarks, presence, handedness, label: handedness > 0.5 ? "Left" : "Right" };
}

/**
 * World landmark output (Float32Array(63), metres, in the crop's upright frame) -> [[x, y, z]
 * * 21] turned back by the ROI's rotation, as MediaPipe projects them.
 */
export function decodeWorldLandmarks(world, roi) {
  if (world.length !== NUM_LANDMARKS * 3) throw new Error(`expected ${NUM_LANDMARKS * 3} world landmark values, got ${world.length}`);
  const c = Math.cos(roi.rotation), s = Math.sin(roi.rotation);
  const out = [];
  for (let k = 0; k < NUM_LANDMARKS; k++) {
    const x = world[3 * k], y = world[3 * k + 1];
    out.push([x * c - y * s, x * s + y * c, world[3 * k + 2]]);
  }
  return out;
}

function uprightRotation(x0, y0, x1, y1, target) {
  const a = target - Math.atan2(-(y1 - y0), x1 - x0);
  return a - 2 * Math.PI * Math.floor((a + Math.PI) / (2 * Math.PI));
}

/** Landmarks in image pixels -> the ROI that tracks the hand into the next frame. */
export function landmarksToRoi(landmarks, cfg = LANDMARKS_TO_ROI) {
  const [x0, y0] = landmarks[cfg.wrist];
  const mid = (k) => ((landmarks[cfg.indexMcp][k] + landmarks[cfg.ringMcp][k]) / 2 + landmarks[cfg.middleMcp][k]) / 2;
  const rotation = uprightRotation(x0, y0, mid(0), mid(1), cfg.targetAngle);
  const pts = cfg.boxLandmarks.map((k) => landmarks[k]);
  // Box of the points in the hand's own frame (rotated by -rotation about the axis-aligned
  // box centre), whose centre is then rotated back into the image.
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const ax = (Math.min(...xs) + Math.max(...xs)) / 2, ay = (Math.min(...ys) + Math.max(...ys)) / 2;
  const c = Math.cos(rotation), s = Math.sin(rotation);
  let minU = Infinity, maxU = -Infinity, minV = Infinity, maxV = -Infinity;
  for (const [x, y] of pts) {
    const u = (x - ax) * c + (y - ay) * s, v = -(x - ax) * s + (y - ay) * c;
    minU = Math.min(minU, u); maxU = Math.max(maxU, u); minV = Math.min(minV, v); maxV = Math.max(maxV, v);
  }
  const mu = (minU + maxU) / 2, mv = (minV + maxV) / 2;
  const w = maxU - minU, h = maxV - minV;
  const cx = ax + mu * c - mv * s, cy = ay + mu * s + mv * c;
  const dy = h * cfg.shiftY;
  return { cx: cx - dy * s, cy: cy + dy * c, size: Math.max(w, h) * cfg.scale, rotation };
}
