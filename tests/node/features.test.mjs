// Feature detection and variant choice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseVariant, detectFeatures } from '../../web/features.mjs';

const all = { wasm: true, simd: true, relaxedSimd: true, threads: true, crossOriginIsolated: true, cores: 8 };

test('Node 20 has SIMD and threads', () => {
  const f = detectFeatures();
  assert.equal(f.wasm, true);
  assert.equal(f.simd, true);
  assert.equal(f.threads, true);
  assert.equal(typeof f.relaxedSimd, 'boolean');
});

test('the variant follows the features and the threads asked for', () => {
  assert.deepEqual(chooseVariant(all, { threads: 1 }), { variant: 'relaxed', threads: 1 });
  assert.deepEqual(chooseVariant(all, { threads: 2 }), { variant: 'relaxed-threads', threads: 2 });
  assert.deepEqual(chooseVariant(all), { variant: 'relaxed-threads', threads: 4 });
  assert.deepEqual(chooseVariant({ ...all, relaxedSimd: false }, { threads: 2 }), { variant: 'simd-threads', threads: 2 });
  assert.deepEqual(chooseVariant(all, { variant: 'simd-threads', threads: 2 }), { variant: 'simd-threads', threads: 2 });
  assert.deepEqual(chooseVariant({ ...all, threads: false }, { threads: 4 }), { variant: 'relaxed', threads: 1 });
  assert.deepEqual(chooseVariant({ ...all, threads: false, relaxedSimd: false }), { variant: 'simd', threads: 1 });
  assert.deepEqual(chooseVariant({ ...all, cores: 1 }), { variant: 'relaxed', threads: 1 });
  assert.deepEqual(chooseVariant(all, { variant: 'simd', threads: 3 }), { variant: 'simd', threads: 1 });
  assert.throws(() => chooseVariant({ ...all, threads: false }, { variant: 'simd-threads' }), /cross-origin-isolated/);
  assert.throws(() => chooseVariant({ ...all, relaxedSimd: false }, { variant: 'relaxed-threads' }), /needs relaxedSimd/);
});

test('no SIMD is a clear error, not a crash', () => {
  assert.throws(() => chooseVariant({ ...all, simd: false, relaxedSimd: false, threads: false }), /needs WebAssembly SIMD/);
  assert.throws(() => chooseVariant({ wasm: false }), /needs WebAssembly/);
});

test('load() without SIMD rejects with the message', async () => {
  const validate = WebAssembly.validate;
  WebAssembly.validate = () => false; // as in a browser without wasm SIMD
  try {
    const { load } = await import('../../web/pysparse.mjs');
    await assert.rejects(load(new Uint8Array(64)), /needs WebAssembly SIMD/);
  } finally {
    WebAssembly.validate = validate;
  }
});
