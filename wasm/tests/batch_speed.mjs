// Times a batch-N model against its batch-1 form, interleaved, and checks that the batch's
// outputs equal N batch-1 runs bit for bit.
//
//   node --no-experimental-fetch wasm/tests/batch_speed.mjs ONE.spnn BATCH.spnn [options]
//     --threads N   thread counts 1..N (default 2)
//     --runs R      timed rounds (default 41); one warm-up round first
//     --variant V   engine build (default simd-threads)
//
// Make the pair with `pysparse pack MODEL -o ONE.spnn` and `pysparse pack MODEL --batch N
// -o BATCH.spnn`. Prints, per thread count, both medians and batch time / batch-1 time
// (the ratio of medians and the median of per-round ratios).
import { readFileSync } from 'node:fs';
import { load } from '../../web/pysparse.mjs';
import { median, pseudoRandom } from './timing.mjs';

const argv = process.argv.slice(2);
const opt = { threads: 2, runs: 41, variant: 'simd-threads' };
const paths = [];
while (argv.length) {
  const a = argv.shift();
  if (a === '--threads') opt.threads = Number(argv.shift());
  else if (a === '--runs') opt.runs = Number(argv.shift());
  else if (a === '--variant') opt.variant = argv.shift();
  else paths.push(a);
}
if (paths.length !== 2) throw new Error('usage: batch_speed.mjs ONE.spnn BATCH.spnn [options]');
const [one, many] = await Promise.all(
  paths.map((p) => load(readFileSync(p), { variant: opt.variant, threads: opt.threads })));
const spec = one.inputs[0];
const n = many.inputs[0].shape[0];
const size = spec.shape.reduce((a, b) => a * b, 1);
if (spec.shape[0] !== 1 || many.inputs[0].shape.reduce((a, b) => a * b, 1) !== n * size) {
  throw new Error(`${paths[1]} is not a batch of ${paths[0]}`);
}

// N different pseudo-random images, and the batch holding them one after another.
const batch = pseudoRandom(n * size);
const images = Array.from({ length: n }, (_, k) => batch.subarray(k * size, (k + 1) * size));

// Outputs: the batch's image k must equal the batch-1 model's output on image k.
const whole = many.run({ [many.inputs[0].name]: batch });
for (let k = 0; k < n; k++) {
  const single = one.run({ [spec.name]: images[k] });
  for (const [name, y] of Object.entries(single)) {
    const part = whole[name].data.subarray(k * y.data.length, (k + 1) * y.data.length);
    const bad = y.data.findIndex((v, i) => !Object.is(v, part[i]));
    if (bad >= 0) {
      console.error(`image ${k} output ${name}[${bad}]: batch ${part[bad]} != batch-1 ${y.data[bad]}`);
      process.exit(1);
    }
  }
}
console.log(`outputs: batch of ${n} equals ${n} batch-1 runs bit for bit`);

for (let t = 1; t <= opt.threads; t++) {
  one.setThreads(t);
  many.setThreads(t);
  const tOne = [];
  const tMany = [];
  for (let r = -1; r < opt.runs; r++) {
    const order = r % 2 ? [0, 1] : [1, 0]; // alternate which goes first
    for (const which of order) {
      const t0 = performance.now();
      if (which === 0) one.run({ [spec.name]: images[0] });
      else many.run({ [many.inputs[0].name]: batch });
      const ms = performance.now() - t0;
      if (r >= 0) (which === 0 ? tOne : tMany).push(ms);
    }
  }
  const paired = tMany.map((m, i) => m / tOne[i]);
  console.log(`${t} thread${t > 1 ? 's' : ' '}: batch 1 ${median(tOne).toFixed(2)} ms, batch ${n} ` +
              `${median(tMany).toFixed(2)} ms, ratio ${(median(tMany) / median(tOne)).toFixed(2)}x ` +
              `(paired ${median(paired).toFixed(2)}x)`);
}
one.dispose();
many.dispose();
process.exit(0);
