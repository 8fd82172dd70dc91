// loadInWorker() in Node (worker_threads): the same answers, computed off the main thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { loadInWorker } from '../../web/pysparse.mjs';
import { assertMatchesReference, casePath, expected, input, manifest } from './case.mjs';

test('a model in a worker matches the reference', async () => {
  const model = await loadInWorker(casePath('model.spnn'), { variant: 'simd' });
  try {
    assert.equal(model.info.worker, true);
    assert.equal(model.info.variant, 'simd');
    assert.deepEqual(model.inputs, [{ name: manifest.input.name, shape: manifest.input.shape }]);
    assert.deepEqual(model.outputs.map((o) => o.name), expected.map((e) => e.name));
    const copy = input.slice();
    assertMatchesReference(await model.run(copy));
    assert.equal(copy.length, input.length, 'the caller keeps its array unless it asks to transfer it');
    assertMatchesReference(await model.run(copy, { transfer: true }));
    assert.equal(copy.length, 0, 'transferred');
  } finally {
    await model.dispose();
  }
  await assert.rejects(model.run(input), /disposed/);
});

test('worker: bytes in, errors out', async () => {
  const bytes = new Uint8Array(await readFile(casePath('model.spnn')));
  const model = await loadInWorker(bytes, { variant: 'simd' });
  try {
    await assert.rejects(model.run(new Float32Array(3)), /has 3 values/);
    assertMatchesReference(await model.run(input));
  } finally {
    await model.dispose();
  }
  await assert.rejects(loadInWorker(casePath('corrupt.spnn'), { variant: 'simd' }), /CRC mismatch/);
});
