// Pixels to a model input: crop, resize to the model's size (stretched, or letterboxed to
// keep the aspect ratio), map 0..255 to the model's value range, then subtract a per-channel
// mean and divide by a per-channel std; RGB planes (NCHW, batch 1).
//
// Drawable sources (canvas, video, image, ImageBitmap, VideoFrame) go through a 2-D canvas
// (the browser crops and resizes bilinearly); ImageData (or any {data, width, height} RGBA
// object) is converted here in plain JS, so it also works in Node and in workers without
// canvas support. Either way, a crop may reach outside the source: that part is black.

const DRAWABLE_TYPES = ['HTMLCanvasElement', 'OffscreenCanvas', 'HTMLVideoElement', 'HTMLImageElement',
  'SVGImageElement', 'ImageBitmap', 'VideoFrame'];

export function isImageDataLike(x) {
  return x !== null && typeof x === 'object' && (x.data instanceof Uint8ClampedArray || x.data instanceof Uint8Array) &&
    Number.isInteger(x.width) && Number.isInteger(x.height) && x.data.length === x.width * x.height * 4;
}

function isDrawable(x) {
  return x !== null && typeof x === 'object' &&
    DRAWABLE_TYPES.some((name) => typeof globalThis[name] === 'function' && x instanceof globalThis[name]);
}

/** Whether `x` is an image source that run() converts (rather than a tensor). */
export function isPixelSource(x) {
  return isImageDataLike(x) || isDrawable(x);
}

/** The natural size of a pixel source. */
export function sourceSize(src) {
  if (typeof HTMLVideoElement === 'function' && src instanceof HTMLVideoElement) {
    return { width: src.videoWidth, height: src.videoHeight };
  }
  if (typeof HTMLImageElement === 'function' && src instanceof HTMLImageElement) {
    return { width: src.naturalWidth, height: src.naturalHeight };
  }
  if (typeof VideoFrame === 'function' && src instanceof VideoFrame) {
    return { width: src.displayWidth, height: src.displayHeight };
  }
  return { width: src.width, height: src.height };
}

function checkCrop(crop, size) {
  const c = crop ?? { x: 0, y: 0, width: size.width, height: size.height };
  for (const key of ['x', 'y', 'width', 'height']) {
    if (typeof c[key] !== 'number' || !Number.isFinite(c[key])) throw new Error(`crop.${key} must be a finite number`);
  }
  if (c.width <= 0 || c.height <= 0) throw new Error('crop width and height must be positive');
  if (size.width <= 0 || size.height <= 0) throw new Error('the image source has no pixels (not loaded yet?)');
  return c;
}

const RESIZE_MODES = ['stretch', 'letterbox'];

function channels(value, name, fallback) {
  if (value === undefined || value === null) return [fallback, fallback, fallback];
  const list = typeof value === 'number' ? [value] : Array.from(value, Number);
  if (list.length === 1) list.push(list[0], list[0]);
  if (list.length !== 3 || !list.every(Number.isFinite)) throw new Error(`${name} must be a number or 3 numbers (R, G, B)`);
  return list;
}

/**
 * How pixels become input values: the `input` entry of the model's metadata (written by
 * `pysparse pack --input-range/--input-mean/--input-std/--input-resize`), each field
 * overridden by the same-named run() option.
 * @returns {{range: number[], mean: number[], std: number[], resize: string}}
 */
export function pixelOptions(inputMeta = {}, opts = {}) {
  const range = opts.range ?? inputMeta?.range ?? [0, 1];
  if (!Array.isArray(range) || range.length !== 2 || !range.every((v) => Number.isFinite(Number(v)))) {
    throw new Error('range must be two numbers [lo, hi]: the values pixel 0 and 255 map to');
  }
  const mean = channels(opts.mean ?? inputMeta?.mean, 'mean', 0);
  const std = channels(opts.std ?? inputMeta?.std, 'std', 1);
  if (std.some((v) => v === 0)) throw new Error('std must not be 0');
  const resize = opts.resize ?? inputMeta?.resize ?? 'stretch';
  if (!RESIZE_MODES.includes(resize)) throw new Error(`resize must be 'stretch' or 'letterbox', got ${JSON.stringify(resize)}`);
  return { range: range.map(Number), mean, std, resize };
}

/**
 * The source region that becomes the input: `crop` (default: the whole source), and for
 * 'letterbox' that region grown about its centre to the input's aspect ratio, so the image
 * keeps its proportions with black bars on two sides. Map a point of the input back to the
 * source with x = region.x + u * region.width / inputWidth (likewise y).
 */
export function fitCrop(crop, size, width, height, resize = 'stretch') {
  const c = checkCrop(crop, size);
  if (resize !== 'letterbox') return c;
  const aspect = width / height;
  if (c.width / c.height > aspect) {
    const h = c.width / aspect;
    return { x: c.x, y: c.y - (h - c.height) / 2, width: c.width, height: h };
  }
  const w = c.height * aspect;
  return { x: c.x - (w - c.width) / 2, y: c.y, width: w, height: c.height };
}

let scratch = null; // one canvas reused across calls

function scratchContext(width, height) {
  if (!scratch) {
    if (typeof OffscreenCanvas === 'function') scratch = new OffscreenCanvas(width, height);
    else if (typeof document === 'object') scratch = document.createElement('canvas');
    else throw new Error('pixel inputs other than ImageData need a canvas (OffscreenCanvas or a DOM)');
  }
  if (scratch.width !== width) scratch.width = width;
  if (scratch.height !== height) scratch.height = height;
  const ctx = scratch.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  return ctx;
}

// RGBA bytes (width x height) -> planar RGB floats, v = (lo + p * (hi - lo) / 255 - mean) / std,
// computed as p * a + b per channel.
function rgbaToPlanes(rgba, width, height, { range: [lo, hi], mean, std }, out) {
  const plane = width * height;
  const scale = (hi - lo) / 255;
  const [ar, ag, ab] = std.map((s) => scale / s);
  const [br, bg, bb] = std.map((s, c) => (lo - mean[c]) / s);
  for (let i = 0, p = 0; i < plane; i++, p += 4) {
    out[i] = rgba[p] * ar + br;
    out[plane + i] = rgba[p + 1] * ag + bg;
    out[2 * plane + i] = rgba[p + 2] * ab + bb;
  }
  return out;
}

// Bilinear crop + resize of RGBA bytes, sampling at pixel centres. Like drawing through a
// canvas, what lies outside the source is transparent black; inside, edges clamp.
function resampleRGBA(img, crop, width, height) {
  const { data, width: sw, height: sh } = img;
  if (crop.x === 0 && crop.y === 0 && crop.width === sw && crop.height === sh && sw === width && sh === height) {
    return data;
  }
  const out = new Uint8ClampedArray(width * height * 4);
  const sx = crop.width / width;
  const sy = crop.height / height;
  for (let y = 0; y < height; y++) {
    const fy = crop.y + (y + 0.5) * sy - 0.5;
    if (fy < -0.5 || fy > sh - 0.5) continue;
    const cy = Math.min(Math.max(fy, 0), sh - 1);
    const y0 = Math.floor(cy);
    const y1 = Math.min(y0 + 1, sh - 1);
    const wy = cy - y0;
    for (let x = 0; x < width; x++) {
      const fx = crop.x + (x + 0.5) * sx - 0.5;
      if (fx < -0.5 || fx > sw - 0.5) continue;
      const cx = Math.min(Math.max(fx, 0), sw - 1);
      const x0 = Math.floor(cx);
      const x1 = Math.min(x0 + 1, sw - 1);
      const wx = cx - x0;
      const a = (y0 * sw + x0) * 4, b = (y0 * sw + x1) * 4, c = (y1 * sw + x0) * 4, d = (y1 * sw + x1) * 4;
      const o = (y * width + x) * 4;
      for (let k = 0; k < 4; k++) {
        const top = data[a + k] + (data[b + k] - data[a + k]) * wx;
        const bottom = data[c + k] + (data[d + k] - data[c + k]) * wx;
        out[o + k] = top + (bottom - top) * wy;
      }
    }
  }
  return out;
}

/**
 * A pixel source as the model's input tensor.
 * @param src ImageData-like or drawable source
 * @param shape the model input shape [1, 3, H, W]
 * @param prep pixelOptions() (or just [lo, hi], the values 0 and 255 map to)
 * @param crop optional {x, y, width, height} in source pixels
 * @param out optional Float32Array of 3*H*W to write into
 */
export function pixelsToTensor(src, shape, prep, crop, out) {
  if (shape.length !== 4 || shape[0] !== 1 || shape[1] !== 3) {
    throw new Error(`pixel inputs need a model input of shape [1, 3, H, W]; this model's is [${shape.join(', ')}]`);
  }
  const options = Array.isArray(prep) ? pixelOptions({ range: prep }) : prep;
  const [, , height, width] = shape;
  out ??= new Float32Array(3 * height * width);
  const size = sourceSize(src);
  const c = fitCrop(crop, size, width, height, options.resize);
  if (isImageDataLike(src)) return rgbaToPlanes(resampleRGBA(src, c, width, height), width, height, options, out);
  const ctx = scratchContext(width, height);
  ctx.clearRect(0, 0, width, height);
  ctx.drawImage(src, c.x, c.y, c.width, c.height, 0, 0, width, height);
  return rgbaToPlanes(ctx.getImageData(0, 0, width, height).data, width, height, options, out);
}
