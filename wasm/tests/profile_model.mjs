// Times a .spnn model on one or more engine builds at 1..N threads, interleaved, and prints
// whole-run medians and best-of per build and thread count; with --layers, per-op medians.
//
//   node --no-experimental-fetch wasm/tests/profile_model.mjs MODEL.spnn [options]
//   (Node 20 runs the relaxed-SIMD builds with --experimental-wasm-relaxed-simd too)
//     --threads N        thread counts 1..N (default 2)
//     --runs R           timed rounds (default 41); one warm-up round first
//     --input IN.bin     float32 input (default: a fixed pseudo-random pattern)
//     --build DIR        a directory holding the engine builds (repeatable: builds alternate
//                        round by round; default web/dist)
//     --variant V        the threaded build to run: simd-threads (default) or relaxed-threads
//                        (repeatable: each build's variants alternate too)
//     --layers K         per-op table of the K slowest ops (profiling on; adds overhead)
//     --by-kernel        per-kernel totals (profiling on)
//     --json OUT         also write the medians (whole runs and, when profiling, per op) as JSON
//     --idle MS          wait MS before each timed run (as a browser page between frames; the
//                        benchmark page waits before each of its runs too)
//
// Rounds alternate builds and thread counts so a busy machine slows all of them alike; the
// speed-up is printed as the ratio of the medians and as the median of per-round ratios.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { load } from '../../web/pysparse.mjs';
import { median, pseudoRandom } from './timing.mjs';

const argv = process.argv.slice(2);
const opt = { threads: 2, runs: 41, input: null, builds: [], variants: [], layers: 0, byKernel: false, json: null };
const modelPath = argv.shift();
while (argv.length) {
  const a = argv.shift();
  if (a === '--threads') opt.threads = Number(argv.shift());
  else if (a === '--runs') opt.runs = Number(argv.shift());
  else if (a === '--input') opt.input = argv.shift();
  else if (a === '--build') opt.builds.push(argv.shift());
  else if (a === '--variant') opt.variants.push(argv.shift());
  else if (a === '--layers') opt.layers = Number(argv.shift());
  else if (a === '--by-kernel') opt.byKernel = true;
  else if (a === '--json') opt.json = argv.shift();
  else if (a === '--idle') opt.idle = Number(argv.shift());
  else throw new Error(`unknown option ${a}`);
}
if (!modelPath) throw new Error('usage: profile_model.mjs MODEL.spnn [options]');
if (!opt.builds.length) opt.builds.push(null);
if (!opt.variants.length) opt.variants.push('simd-threads');

const profiling = opt.layers > 0 || opt.byKernel;

const models = [];
for (const dir of opt.builds) {
  for (const variant of opt.variants) {
    const o = { variant, threads: opt.threads };
    if (dir) o.locateFile = (name) => pathToFileURL(resolve(dir, name)).href;
    const model = await load(readFileSync(modelPath), o);
    model.setProfiling(profiling);
    const name = `${dir ?? 'web/dist'}${opt.variants.length > 1 ? ` ${variant}` : ''}`;
    models.push({ name, model });
  }
}
const spec = models[0].model.inputs[0];
const count = spec.shape.reduce((a, b) => a * b, 1);
let x;
if (opt.input) {
  const b = readFileSync(opt.input);
  x = new Float32Array(b.buffer, b.byteOffset, count).slice();
} else {
  x = pseudoRandom(count);
}
const input = { [spec.name]: x };

// times[b][t] = [ms...]; ops[b][t] = [[us per op]...]
const times = models.map(() => Array.from({ length: opt.threads + 1 }, () => []));
const ops = models.map(() => Array.from({ length: opt.threads + 1 }, () => []));
const names = models.map(() => null);
for (let r = -1; r < opt.runs; r++) {
  for (let t = 1; t <= opt.threads; t++) {
    for (let k = 0; k < models.length; k++) {
      const b = (k + Math.max(r, 0)) % models.length; // rotate which build goes first
      const { model } = models[b];
      model.setThreads(t);
      if (opt.idle > 0) await new Promise((done) => setTimeout(done, opt.idle));
      const t0 = performance.now();
      model.run(input);
      const ms = performance.now() - t0;
      if (r < 0) continue;
      times[b][t].push(ms);
      if (profiling) {
        const p = model.profile();
        names[b] ??= p.map((l) => ({ name: l.name, kernel: l.kernel, macs: l.macs }));
        ops[b][t].push(p.map((l) => l.us));
      }
    }
  }
}

for (let b = 0; b < models.length; b++) {
  const line = [models[b].name.padEnd(28)];
  for (let t = 1; t <= opt.threads; t++) {
    line.push(`${t}t median ${median(times[b][t]).toFixed(2)} best ${Math.min(...times[b][t]).toFixed(2)}`);
  }
  if (opt.threads >= 2) {
    // Also the median of each round's own ratio: a round's 1- and 2-thread runs are
    // adjacent, so slow phases of a shared host cancel out of it.
    const paired = times[b][1].map((t1, i) => t1 / times[b][2][i]);
    line.push(`speed-up ${(median(times[b][1]) / median(times[b][2])).toFixed(2)}x` +
              ` (paired ${median(paired).toFixed(2)}x)`);
  }
  console.log(line.join('  '));
}

if (profiling) {
  for (let b = 0; b < models.length; b++) {
    const med = [];
    const opsOf = names[b];
    for (let t = 1; t <= opt.threads; t++) {
      med[t] = opsOf.map((_, i) => median(ops[b][t].map((run) => run[i])) / 1000);
    }
    console.log(`\n${models[b].name}: op medians (ms)`);
    if (opt.byKernel) {
      const agg = {};
      opsOf.forEach((n, i) => {
        const k = (agg[n.kernel] ??= { n: 0, ms: Array(opt.threads + 1).fill(0) });
        k.n++;
        for (let t = 1; t <= opt.threads; t++) k.ms[t] += med[t][i];
      });
      const rows = Object.entries(agg).sort((p, q) => q[1].ms[1] - p[1].ms[1]);
      for (const [k, v] of rows) {
        const cols = v.ms.slice(1).map((m) => m.toFixed(2).padStart(7));
        const sp = opt.threads >= 2 && v.ms[2] > 0 ? `${(v.ms[1] / v.ms[2]).toFixed(2)}x` : '';
        console.log(`${k.padEnd(22)} ${String(v.n).padStart(4)} ops ${cols.join(' ')}  ${sp}`);
      }
      const tot = Array.from({ length: opt.threads }, (_, t) => med[t + 1].reduce((a, c) => a + c, 0));
      console.log(`${'sum of ops'.padEnd(31)} ${tot.map((m) => m.toFixed(2).padStart(7)).join(' ')}`);
    }
    if (opt.layers > 0) {
      const order = opsOf.map((_, i) => i).sort((i, j) => med[1][j] - med[1][i]).slice(0, opt.layers);
      for (const i of order) {
        const n = opsOf[i];
        const cols = [];
        for (let t = 1; t <= opt.threads; t++) cols.push(med[t][i].toFixed(3).padStart(7));
        const sp = opt.threads >= 2 ? `${(med[1][i] / med[2][i]).toFixed(2)}x` : '';
        console.log(`${String(i).padStart(3)} ${n.kernel.padEnd(16)} ${(n.macs / 1e6).toFixed(2).padStart(7)}M ${cols.join(' ')}  ${sp.padStart(6)}  ${n.name}`);
      }
    }
  }
}
if (opt.json) {
  const report = models.map(({ name }, b) => {
    const threads = {};
    for (let t = 1; t <= opt.threads; t++) {
      threads[t] = { median_ms: median(times[b][t]), best_ms: Math.min(...times[b][t]) };
      if (profiling) threads[t].op_ms = names[b].map((_, i) => median(ops[b][t].map((run) => run[i])) / 1000);
    }
    return { build: name, runs: opt.runs, ops: names[b], threads };
  });
  writeFileSync(opt.json, JSON.stringify({ model: modelPath, builds: report }, null, 1));
}
for (const { model } of models) model.dispose();
process.exit(0);
