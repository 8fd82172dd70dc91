// Loads .spnn files in the wasm engine through the JS runtime, one JSON line per file:
// {"file", "status": "ok" | the error's status ('format', 'unsupported', 'nomem', ...) |
//  "crash", "message", "ms", "heapMB"} — for the tests that hold the readers to one corpus.
//
//   node wasm/tests/check_files.mjs VARIANT FILE...
import { readFileSync } from 'node:fs';
import { load, PysparseError } from '../../web/pysparse.mjs';

const [variant, ...files] = process.argv.slice(2);
for (const file of files) {
  const bytes = readFileSync(file);
  const t0 = performance.now();
  let status = 'ok';
  let message = '';
  try {
    const model = await load(bytes, { variant, threads: 1 });
    model.dispose();
  } catch (e) {
    status = e instanceof PysparseError ? e.status : 'crash';
    message = String(e.message ?? e);
  }
  const ms = performance.now() - t0;
  console.log(JSON.stringify({ file, status, message, ms, heapMB: process.memoryUsage().rss / 2 ** 20 }));
}
process.exit(0);
