// Times runs of a .spnn model with a pause before each, as an application between video
// frames calls it: how a thread count copes with workers that idled in between.
//
//   node wasm/tests/pause_timing.mjs MODEL.spnn [options]
//     --threads N     threads (default 2)
//     --pause MS      idle time before each timed run (default 30; 0: back to back)
//     --runs R        timed runs (default 100), after 5 untimed ones
//     --build DIR     a directory holding the engine builds (default web/dist)
//     --variant V     relaxed-threads (default), simd-threads, relaxed or simd
//
// One build per process: two builds' thread pools in one process would share the cores'
// idle time, each one's waiting workers changing how the other's wake. To compare builds,
// alternate processes. Prints percentiles of the run times (ms).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { load } from '../../web/pysparse.mjs';
import { pseudoRandom } from './timing.mjs';

const argv = process.argv.slice(2);
const opt = { threads: 2, pause: 30, runs: 100, build: null, variant: 'relaxed-threads' };
const modelPath = argv.shift();
while (argv.length) {
  const a = argv.shift();
  if (a === '--threads') opt.threads = Number(argv.shift());
  else if (a === '--pause') opt.pause = Number(argv.shift());
  else if (a === '--runs') opt.runs = Number(argv.shift());
  else if (a === '--build') opt.build = argv.shift();
  else if (a === '--variant') opt.variant = argv.shift();
  else throw new Error(`unknown option ${a}`);
}
if (!modelPath) throw new Error('usage: pause_timing.mjs MODEL.spnn [options]');

const o = { variant: opt.variant, threads: opt.threads };
if (opt.build) o.locateFile = (name) => pathToFileURL(resolve(opt.build, name)).href;
const model = await load(readFileSync(modelPath), o);
const spec = model.inputs[0];
model.inputData().set(pseudoRandom(spec.shape.reduce((a, b) => a * b, 1)));
for (let i = 0; i < 5; i++) model.run(model.inputData());

const ms = [];
for (let i = 0; i < opt.runs; i++) {
  if (opt.pause > 0) await new Promise((done) => setTimeout(done, opt.pause));
  const t0 = performance.now();
  model.run(model.inputData());
  ms.push(performance.now() - t0);
}
const sorted = [...ms].sort((a, b) => a - b);
const at = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))].toFixed(2);
console.log(`${opt.build ?? 'web/dist'} ${opt.variant} ${opt.threads}t, ${opt.pause} ms pause: ` +
            `p10 ${at(0.1)} p50 ${at(0.5)} p90 ${at(0.9)} ms`);
model.dispose();
process.exit(0);
