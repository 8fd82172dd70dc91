// web/pysparse.mjs in Node: a real packed hand model against the numpy reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { load, PysparseError } from '../../web/pysparse.mjs';
import { assertMatchesReference, casePath, expected, input, manifest } from './case.mjs';

test('loads from a path and reports the model', async () => {
  const model = await load(casePath('model.spnn'), { variant: 'simd', threads: 1 });
  try {
    assert.deepEqual(model.inputs, [{ name: manifest.input.name, shape: manifest.input.shape }]);
    assert.deepEqual(model.outputs.map((o) => o.name), expected.map((e) => e.name));
    const info = model.info;
    assert.equal(info.variant, 'simd');
    assert.equal(info.buildVariant, 'simd128');
    assert.equal(info.threads, 1);
    assert.ok(info.arenaBytes > 0 && info.weightBytes > 0);
    assert.equal(info.metadata.input.name, manifest.input.name);
    assert.deepEqual(info.metadata.input.range, manifest.input.range);
  } finally {
    model.dispose();
  }
});

test('outputs equal the numpy reference (simd, 1 thread)', async () => {
  const model = await load(casePath('model.spnn'), { variant: 'simd', threads: 1 });
  try {
    assertMatchesReference(model.run(input));
    // A second run on the same model gives the same answer (nothing left over from the first).
    assertMatchesReference(model.run({ [manifest.input.name]: input }));
  } finally {
    model.dispose();
  }
});

// inputData(): the engine's own input buffer, read in place by run(); runs never write it
// (the memory plan reuses an input's arena bytes once it is read, so the engine keeps inputs
// apart), so a second run of the same view gives the same answer.
test('inputData: run(view) reads the engine buffer in place and leaves it as written', async () => {
  for (const opts of [{ variant: 'simd', threads: 1 }, { threads: 2 }]) {
    const model = await load(casePath('model.spnn'), opts);
    try {
      const view = model.inputData();
      assert.equal(view.length, input.length);
      assert.deepEqual(model.inputData(manifest.input.name), view);
      view.set(input);
      assertMatchesReference(model.run(view));
      assert.deepEqual(view, input, 'a run changed the input buffer');
      assertMatchesReference(model.run(view));
      const copied = model.run(input); // a copy into the same buffer: same bits
      const inPlace = model.run(view);
      for (const name of Object.keys(copied)) assert.deepEqual(inPlace[name].data, copied[name].data);
      // the same view every time (run() knows it and prepares nothing), and what is written
      // into it between runs is what the next run reads
      assert.equal(model.inputData(), view);
      view.fill(0);
      const zeros = model.run(model.inputData());
      assert.ok(Object.keys(zeros).some((name) => zeros[name].data.some((v, i) => v !== copied[name].data[i])));
      view.set(input);
      assertMatchesReference(model.run(model.inputData()));
      assert.throws(() => model.inputData('nope'), /unknown input 'nope'/);
    } finally {
      model.dispose();
    }
  }
});

test('a view of memory that is gone is a clear error', async () => {
  const model = await load(casePath('model.spnn'), { variant: 'simd' });
  try {
    const buffer = new ArrayBuffer(4 * input.length);
    const stale = new Float32Array(buffer);
    structuredClone(buffer, { transfer: [buffer] }); // detaches `buffer`, as memory growth does
    assert.throws(() => model.run(stale), /memory that is gone.*inputData\(\)/);
  } finally {
    model.dispose();
  }
});

test('loads from bytes (Uint8Array and ArrayBuffer)', async () => {
  const bytes = new Uint8Array(await readFile(casePath('model.spnn')));
  for (const source of [bytes, bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)]) {
    const model = await load(source, { variant: 'simd' });
    assertMatchesReference(model.run(input));
    model.dispose();
  }
});

test('RGBA pixels (ImageData-like) give the same outputs as the tensor', async () => {
  const rgba = new Uint8ClampedArray(await readFile(casePath(manifest.input.pixels)));
  const [, , height, width] = manifest.input.shape;
  const model = await load(casePath('model.spnn'), { variant: 'simd' });
  try {
    assertMatchesReference(model.run({ data: rgba, width, height }));
  } finally {
    model.dispose();
  }
});

// A model loaded for 2 threads gives the same bits on 1 and 2 of them; one loaded for a
// single thread may group some sums differently (docs/decisions.md), within the tolerance.
test('threads: the threaded build, 2 threads, outputs identical on 1 and 2 of them', async () => {
  const one = await load(casePath('model.spnn'), { variant: 'simd', threads: 1 });
  const two = await load(casePath('model.spnn'), { threads: 2 });
  try {
    assert.equal(two.info.variant, 'simd-threads');
    assert.equal(two.info.threads, 2);
    const a = one.run(input);
    const b = two.run(input);
    assertMatchesReference(a);
    assertMatchesReference(b);
    two.setThreads(1);
    assert.equal(two.info.threads, 1);
    for (const [name, o] of Object.entries(two.run(input))) {
      assert.deepEqual(o.data, b[name].data, `${name} differs between 1 and 2 threads`);
    }
  } finally {
    one.dispose();
    two.dispose();
  }
});

test('a corrupt file rejects with the loader message', async () => {
  await assert.rejects(load(casePath('corrupt.spnn'), { variant: 'simd' }), (e) => {
    assert.ok(e instanceof PysparseError);
    assert.equal(e.status, 'format');
    assert.match(e.message, /section WEIGHTS CRC mismatch/);
    return true;
  });
  await assert.rejects(load(casePath('truncated.spnn'), { variant: 'simd' }), (e) => e instanceof PysparseError && e.status === 'format' && e.message.length > 0);
  await assert.rejects(load(new Uint8Array(0), { variant: 'simd' }), PysparseError);
  await assert.rejects(load(casePath('no-such-file.spnn')), /ENOENT/);
});

test('wrong inputs throw clear errors', async () => {
  const model = await load(casePath('model.spnn'), { variant: 'simd' });
  try {
    assert.throws(() => model.run(new Float32Array(10)), /has 10 values; the model expects 1x3x\d+x\d+ = \d+/);
    assert.throws(() => model.run(new Float64Array(input.length)), TypeError);
    assert.throws(() => model.run([1, 2, 3]), TypeError);
    assert.throws(() => model.run({ nope: input }), /unknown input 'nope'/);
    assert.throws(() => model.run({ data: new Uint8ClampedArray(16), width: 2, height: 2 }, { crop: { x: 0, y: 0, width: 0, height: 1 } }), /crop/);
    // The model still works after the errors.
    assertMatchesReference(model.run(input));
  } finally {
    model.dispose();
  }
  assert.throws(() => model.run(input), /disposed/);
});

test('an unknown or unavailable variant is a clear error', async () => {
  await assert.rejects(load(casePath('model.spnn'), { variant: 'avx' }), /unknown variant "avx"/);
  await assert.rejects(load(casePath('model.spnn'), { threads: 0 }), /threads must be/);
});

test('per-op profile of a run', async () => {
  const model = await load(casePath('model.spnn'), { variant: 'simd', threads: 1 });
  try {
    model.setProfiling(true);
    model.run(input);
    const profile = model.profile();
    assert.ok(profile.length > 10);
    for (const e of profile) {
      assert.equal(typeof e.op, 'string');
      assert.equal(typeof e.kernel, 'string');
      assert.ok(e.us >= 0);
    }
    assert.ok(profile.some((e) => e.op === 'CONV2D'));
  } finally {
    model.dispose();
  }
});
