// Pixel preprocessing (letterbox, mean/std) from a model's metadata or run() options, and
// the note a model's info carries when fewer threads run than were asked for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fitCrop, pixelOptions, pixelsToTensor } from '../../web/pixels.mjs';
import { load, threadsNote } from '../../web/pysparse.mjs';
import { casePath, manifest } from './case.mjs';

function solid(width, height, rgb) {
  const data = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) data.set([...rgb, 255], i * 4);
  return { data, width, height };
}

test('letterbox keeps the aspect ratio with black bars', () => {
  const wide = pixelsToTensor(solid(4, 2, [255, 255, 255]), [1, 3, 4, 4], pixelOptions({ resize: 'letterbox' }));
  const rows = [0, 1, 2, 3].map((y) => Array.from(wide.subarray(y * 4, y * 4 + 4)));
  assert.deepEqual(rows, [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]);
  const tall = pixelsToTensor(solid(2, 4, [255, 255, 255]), [1, 3, 4, 4], pixelOptions({ resize: 'letterbox' }));
  assert.deepEqual(Array.from(tall.subarray(0, 4)), [0, 1, 1, 0]);
  // stretch (the default) fills the input
  const stretched = pixelsToTensor(solid(4, 2, [255, 255, 255]), [1, 3, 4, 4], pixelOptions({}));
  assert.ok(stretched.every((v) => v === 1));
});

test('fitCrop grows the crop about its centre to the input aspect ratio', () => {
  const size = { width: 640, height: 480 };
  assert.deepEqual(fitCrop(undefined, size, 224, 224, 'letterbox'), { x: 0, y: -80, width: 640, height: 640 });
  assert.deepEqual(fitCrop({ x: 10, y: 20, width: 100, height: 200 }, size, 256, 128, 'letterbox'),
    { x: -140, y: 20, width: 400, height: 200 });
  assert.deepEqual(fitCrop(undefined, size, 224, 224), { x: 0, y: 0, width: 640, height: 480 });
});

test('mean and std apply per channel after the range', () => {
  const prep = pixelOptions({ range: [0, 1], mean: [0.5, 0.25, 0], std: [0.25, 0.5, 2] });
  const t = pixelsToTensor(solid(1, 1, [255, 0, 255]), [1, 3, 1, 1], prep);
  assert.deepEqual(Array.from(t), [2, -0.5, 0.5]);
});

test('run() options override the metadata; bad values are errors', () => {
  const meta = { range: [-1, 1], mean: 0.5, resize: 'letterbox' };
  assert.deepEqual(pixelOptions(meta), { range: [-1, 1], mean: [0.5, 0.5, 0.5], std: [1, 1, 1], resize: 'letterbox' });
  assert.deepEqual(pixelOptions(meta, { resize: 'stretch', std: 2 }).resize, 'stretch');
  assert.deepEqual(pixelOptions(meta, { std: 2 }).std, [2, 2, 2]);
  assert.throws(() => pixelOptions({}, { std: 0 }), /std must not be 0/);
  assert.throws(() => pixelOptions({}, { mean: [1, 2] }), /3 numbers/);
  assert.throws(() => pixelOptions({}, { resize: 'crop' }), /stretch' or 'letterbox/);
});

test('a real model: run(pixels, {letterbox, mean, std}) equals run(the tensor made by hand)', async () => {
  const model = await load(new Uint8Array(await readFile(casePath(manifest.model))), { threads: 1 });
  try {
    const [, , h, w] = model.inputs[0].shape;
    const img = solid(w, Math.round(h / 2), [200, 100, 50]);
    const opts = { resize: 'letterbox', range: [0, 1], mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };
    const tensor = pixelsToTensor(img, model.inputs[0].shape, pixelOptions({}, opts));
    const top = Math.round(h / 4);  // the image sits in the middle half of the rows
    assert.equal(tensor[(top - 1) * w], (0 - 0.5) / 0.2);
    assert.ok(Math.abs(tensor[(top + 1) * w] - (200 / 255 - 0.5) / 0.2) < 1e-5);
    const a = model.run(img, opts);
    const b = model.run(tensor);
    for (const name of Object.keys(b)) assert.deepEqual(Array.from(a[name].data), Array.from(b[name].data));
    assert.equal(model.info.threadsNote, '');
  } finally {
    model.dispose();
  }
});

test('info says why fewer threads run than asked for', () => {
  const plainPage = { wasm: true, simd: true, relaxedSimd: true, threads: false, crossOriginIsolated: false, cores: 4 };
  const note = threadsNote(2, 1, { variant: 'relaxed', threads: 1 }, plainPage);
  assert.match(note, /^2 threads asked for, 1 running: threads need a cross-origin-isolated page/);
  assert.equal(threadsNote('auto', 1, { variant: 'relaxed', threads: 1 }, plainPage), '');
  assert.equal(threadsNote(1, 1, { variant: 'relaxed', threads: 1 }, plainPage), '');
  const isolated = { ...plainPage, crossOriginIsolated: true };
  assert.match(threadsNote(2, 1, { variant: 'relaxed', threads: 1 }, isolated), /no shared WebAssembly memory/);
  assert.match(threadsNote(8, 4, { variant: 'relaxed-threads', threads: 8 }, { ...isolated, threads: true }),
    /at most 4 threads/);
});
