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
