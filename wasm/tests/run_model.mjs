// Runs a .spnn model on a real wasm build through the JS runtime (web/pysparse.mjs), for
// tests and timing.
//
//   node wasm/tests/run_model.mjs VARIANT MODEL.spnn MAX_THREADS IN.bin OUT_PREFIX [REPEAT]
//   node wasm/tests/run_model.mjs MANIFEST.json     (many models in one process)
//
// IN.bin holds the float32 inputs concatenated in input order. For each thread count
// 1..MAX_THREADS the outputs (concatenated) go to OUT_PREFIX.t<threads>.bin. With REPEAT > 1
// the runs of the thread counts are interleaved and the medians printed as JSON:
// {"variant", "build", "ms": {"1": median, "2": ...}, "runs"}.
import { readFileSync, writeFileSync } from 'node:fs';
import { load } from '../../web/pysparse.mjs';
import { median } from './timing.mjs';

const args = process.argv.slice(2);

/** Runs one model; writes its outputs per thread count; returns the median times. */
async function runJob(variant, modelPath, maxThreads, inPath, outPrefix, repeat) {
  const opts = { variant, threads: maxThreads };
  const model = await load(readFileSync(modelPath), opts);
  const input = readFileSync(inPath);
  const floats = new Float32Array(input.buffer, input.byteOffset, input.byteLength / 4);
  const named = {};
  let pos = 0;
  for (const spec of model.inputs) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    named[spec.name] = floats.slice(pos, pos + n);
    pos += n;
  }
  const times = {};
  for (let t = 1; t <= maxThreads; t++) times[t] = [];
  for (let r = 0; r < repeat; r++) {
    for (let t = 1; t <= maxThreads; t++) {
      model.setThreads(t);
      const t0 = performance.now();
      const out = model.run(named);
      times[t].push(performance.now() - t0);
      if (r === 0) {
        const parts = model.outputs.map((spec) => Buffer.from(out[spec.name].data.buffer));
        writeFileSync(`${outPrefix}.t${t}.bin`, Buffer.concat(parts));
      }
    }
  }
  const ms = {};
  // the first run of each count warms up; leave it out of the medians when there are more
  for (const t of Object.keys(times)) ms[t] = median(times[t].length > 2 ? times[t].slice(1) : times[t]);
  const build = model.info?.buildVariant ?? null;
  model.dispose();
  return { variant, model: modelPath, build, ms, runs: repeat };
}

if (args.length === 1) {
  // A manifest: {"variant", "jobs": [{"model", "input", "out", "threads", "repeat"}]}
  const manifest = JSON.parse(readFileSync(args[0], 'utf8'));
  for (const job of manifest.jobs) {
    const r = await runJob(manifest.variant, job.model, job.threads ?? 1, job.input, job.out, job.repeat ?? 1);
    console.log(JSON.stringify(r));
  }
} else {
  const [variant, modelPath, maxThreads, inPath, outPrefix, repeat = '1'] = args;
  console.log(JSON.stringify(await runJob(variant, modelPath, Number(maxThreads), inPath, outPrefix, Number(repeat))));
}
process.exit(0);
