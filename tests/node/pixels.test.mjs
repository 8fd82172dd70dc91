// Pixels to tensors in plain JS (ImageData-like sources): crop, resize, range, layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pixelsToTensor } from '../../web/pixels.mjs';

// A width x height RGBA image whose pixel (x, y) is (x, y, 7, 255).
function ramp(width, height) {
  const data = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x, y, 7, 255], (y * width + x) * 4);
  }
  return { data, width, height };
}

test('planar RGB with 0..255 mapped to the range', () => {
  const t = pixelsToTensor(ramp(4, 3), [1, 3, 3, 4], [-1, 1]);
  assert.equal(t.length, 36);
  const at = (c, y, x) => t[c * 12 + y * 4 + x];
  assert.equal(at(0, 2, 3), Math.fround(-1 + 3 * 2 / 255));
  assert.equal(at(1, 2, 3), Math.fround(-1 + 2 * 2 / 255));
  assert.equal(at(2, 0, 0), Math.fround(-1 + 7 * 2 / 255));
});

test('a crop of the model size copies pixels exactly', () => {
  const t = pixelsToTensor(ramp(10, 8), [1, 3, 2, 3], [0, 255], { x: 5, y: 4, width: 3, height: 2 });
  assert.deepEqual(Array.from(t.subarray(0, 6)), [5, 6, 7, 5, 6, 7]);
  assert.deepEqual(Array.from(t.subarray(6, 12)), [4, 4, 4, 5, 5, 5]);
});

test('downscaling by 2 averages pixel pairs (bilinear at pixel centres)', () => {
  const img = ramp(8, 2);
  for (let i = 0; i < img.data.length; i += 4) img.data[i] *= 2; // red = 2x: pair means are whole
  const t = pixelsToTensor(img, [1, 3, 1, 4], [0, 255]);
  assert.deepEqual(Array.from(t.subarray(0, 4)), [1, 5, 9, 13]);
});

test('what a crop takes from outside the source is black', () => {
  const t = pixelsToTensor(ramp(4, 4), [1, 3, 2, 4], [0, 255], { x: -2, y: 0, width: 4, height: 2 });
  assert.deepEqual(Array.from(t.subarray(16, 24)), [0, 0, 7, 7, 0, 0, 7, 7]); // blue plane
});

test('bad crops and shapes are clear errors', () => {
  assert.throws(() => pixelsToTensor(ramp(4, 4), [1, 3, 2, 2], [0, 1], { x: 0, y: 0, width: 0, height: 2 }), /positive/);
  assert.throws(() => pixelsToTensor(ramp(4, 4), [1, 3, 2, 2], [0, 1], { x: NaN, y: 0, width: 1, height: 1 }), /crop.x/);
  assert.throws(() => pixelsToTensor(ramp(4, 4), [1, 1, 2, 2], [0, 1]), /\[1, 3, H, W\]/);
});
