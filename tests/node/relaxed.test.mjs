// The relaxed-SIMD build (Node 20 runs it behind --experimental-wasm-relaxed-simd, which
// tests/test_web_node.py passes for this file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detectFeatures, load } from '../../web/pysparse.mjs';
import { assertMatchesReference, casePath, input } from './case.mjs';

test('relaxed SIMD is detected and preferred for one thread', async () => {
  assert.equal(detectFeatures().relaxedSimd, true);
  const model = await load(casePath('model.spnn'), { threads: 1 });
  try {
    assert.equal(model.info.variant, 'relaxed');
    assert.equal(model.info.buildVariant, 'relaxed-simd');
    assertMatchesReference(model.run(input));
  } finally {
    model.dispose();
  }
});

test('more than one thread picks the relaxed threaded build; its 1- and 2-thread outputs agree', async () => {
  const model = await load(casePath('model.spnn'), { threads: 2 });
  try {
    assert.equal(model.info.variant, 'relaxed-threads');
    assert.equal(model.info.buildVariant, 'relaxed-simd-threads');
    assert.equal(model.info.threads, 2);
    const two = model.run(input);
    assertMatchesReference(two);
    model.setThreads(1);
    for (const [name, o] of Object.entries(model.run(input))) {
      assert.deepEqual(o.data, two[name].data, `${name} differs between 1 and 2 threads`);
    }
  } finally {
    model.dispose();
  }
});
