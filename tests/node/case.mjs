// The test case that tests/test_web_node.py writes (tests/web_fixtures.py): a packed real
// model, an input from a real photo, and the numpy reference's outputs.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import assert from 'node:assert/strict';

const dir = process.env.PYSPARSE_WEB_CASE;
if (!dir) throw new Error('PYSPARSE_WEB_CASE is not set: run these through `pytest tests/test_web_node.py`');

export const caseDir = dir;
export const casePath = (name) => path.join(dir, name);
export const manifest = JSON.parse(await readFile(casePath('case.json'), 'utf8'));

export async function readF32(name) {
  const bytes = await readFile(casePath(name));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice();
}

export const input = await readF32(manifest.input.file);
export const expected = await Promise.all(manifest.outputs.map(async (o) => ({ ...o, data: await readF32(o.file) })));

/** Asserts every named output equals the reference within its tolerance. */
export function assertMatchesReference(outputs) {
  assert.deepEqual(Object.keys(outputs).sort(), expected.map((e) => e.name).sort());
  for (const e of expected) {
    const got = outputs[e.name];
    assert.deepEqual(got.shape, e.shape, `shape of ${e.name}`);
    assert.ok(got.data instanceof Float32Array);
    let worst = 0, at = -1;
    for (let i = 0; i < e.data.length; i++) {
      const d = Math.abs(got.data[i] - e.data[i]);
      if (!(d <= worst)) { worst = d; at = i; } // NaN counts as worst
    }
    assert.ok(worst <= e.tolerance, `${e.name}[${at}] = ${got.data[at]}, reference ${e.data[at]}: ` +
      `|diff| ${worst} > tolerance ${e.tolerance}`);
  }
}
