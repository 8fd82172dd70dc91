// The benchmark page's engine: loads every configuration (system, model URL, threads),
// then times them interleaved, one run of each per round, so that drifts in machine speed
// hit every system alike. Returns plain JSON for the driver (Playwright).
import { load as loadPysparse } from '../pysparse.mjs';

const LITERT_WASM = '/node_modules/@litertjs/core/wasm/';
const TFLITE_DIST = '/node_modules/@tensorflow/tfjs-tflite/dist/';
// tfjs-tflite (the legacy TFLite row) is a classic script over tfjs-core and its CPU backend,
// loaded only when a configuration asks for it.
const TFLITE_SCRIPTS = ['/node_modules/@tensorflow/tfjs-core/dist/tf-core.min.js',
                        '/node_modules/@tensorflow/tfjs-backend-cpu/dist/tf-backend-cpu.min.js',
                        TFLITE_DIST + 'tf-tflite.min.js'];
const ORT_DIST = '/node_modules/onnxruntime-web/dist/';
let ort = null;
let litert = null; // the LiteRT.js module once loaded, and the thread count its wasm build was chosen for
let tfliteScripts = null;

// The name of the file this page fetched whose name starts with `prefix` (which wasm build).
function loadedFile(prefix) {
  const hit = performance.getEntriesByType('resource').map((e) => e.name.split('/').pop())
    .find((name) => name.startsWith(prefix) && name.endsWith('.wasm'));
  return hit ?? null;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement('script');
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(el);
  });
}

// A fixed input per shape (same values for every system; uniform in [-1, 1]).
function makeInput(size, seed = 1) {
  const x = new Float32Array(size);
  let s = seed >>> 0;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = (s / 4294967296) * 2 - 1;
  }
  return x;
}

const prod = (shape) => shape.reduce((a, b) => a * b, 1);
const nhwc = ([n, c, h, w]) => [n, h, w, c];

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

// Each loader returns {run(), dispose(), info}; run() includes copying the outputs out.
const LOADERS = {
  async pysparse(cfg) {
    const bytes = await fetchBytes(cfg.url);
    const opts = { threads: cfg.threads };
    // cfg.dist: another engine build's folder (an A/B of two builds in one session)
    if (cfg.dist) opts.locateFile = (name) => new URL(cfg.dist + name, location.href).href;
    const model = await loadPysparse(bytes, opts);
    // The input goes in once, into the engine's own input buffer (as LiteRT.js's goes into
    // its Tensor), and every run reads it there. The view is taken again per run: loading
    // another model into the same engine may have grown its memory since.
    model.inputData().set(makeInput(prod(model.inputs[0].shape)));
    const run = () => model.run(model.inputData());
    return {
      run,
      dispose: () => model.dispose(),
      info: { variant: model.info.variant, build: model.info.buildVariant, threads: model.info.threads },
      profile: typeof model.profile === 'function' ? (n) => {
        model.setProfiling(true);
        const total = new Map();
        for (let i = 0; i < n; i++) {
          run();
          for (const row of model.profile()) {
            const key = `${row.name}\u0000${row.op}\u0000${row.kernel}`;
            total.set(key, (total.get(key) || 0) + row.us);
          }
        }
        model.setProfiling(false);
        return [...total].map(([k, us]) => {
          const [name, op, kernel] = k.split('\u0000');
          return { name, op, kernel, us: us / n };
        });
      } : null,
    };
  },

  // LiteRT.js: XNNPACK in wasm (relaxed SIMD). Its wasm module is one per page; the
  // threaded build (which needs relaxed SIMD and cross-origin isolation) for 2+ threads.
  async litert(cfg) {
    if (!litert) {
      const mod = await import('@litertjs/core');
      await mod.loadLiteRt(LITERT_WASM, { threads: cfg.threads > 1 });
      litert = { mod, threads: cfg.threads };
    }
    if ((cfg.threads > 1) !== (litert.threads > 1)) {
      throw new Error('one page holds one LiteRT.js build: single- or multi-threaded');
    }
    const { loadAndCompile, Tensor } = litert.mod;
    const bytes = await fetchBytes(cfg.url);
    const model = await loadAndCompile(bytes, { accelerator: 'wasm', cpuOptions: { numThreads: cfg.threads } });
    const spec = model.getInputDetails()[0];
    const shape = [...spec.shape];
    const x = new Tensor(makeInput(prod(shape)), shape);
    return {
      run: async () => {
        const outs = await model.run([x]);
        const data = outs.map((t) => t.toTypedArray()); // copies out of the wasm heap
        outs.forEach((t) => t.delete());
        return data;
      },
      dispose: () => { x.delete(); model.delete(); },
      info: { threads: cfg.threads, wasm: loadedFile('litert_wasm'), inputShape: shape },
    };
  },

  async tflite(cfg) {
    tfliteScripts ??= TFLITE_SCRIPTS.reduce((p, src) => p.then(() => loadScript(src)), Promise.resolve());
    await tfliteScripts;
    const tflite = globalThis.tflite;
    if (!tflite) throw new Error('tfjs-tflite did not load');
    tflite.setWasmPath(TFLITE_DIST);
    const bytes = await fetchBytes(cfg.url);
    const model = await tflite.loadTFLiteModel(bytes.buffer, { numThreads: cfg.threads });
    const spec = model.inputs[0];
    const tf = globalThis.tf;
    const x = tf.tensor(makeInput(prod(spec.shape)), spec.shape, 'float32');
    return {
      run: () => {
        const y = model.predict(x);
        const outs = y instanceof tf.Tensor ? [y] : Object.values(y);
        const data = outs.map((t) => t.dataSync());
        outs.forEach((t) => t.dispose());
        return data;
      },
      dispose: () => { x.dispose(); },
      info: { inputShape: spec.shape },
    };
  },

  async ort(cfg) {
    if (!ort) {
      ort = await import(ORT_DIST + 'ort.wasm.min.mjs');
      ort.env.wasm.wasmPaths = ORT_DIST;
    }
    // numThreads is global to the runtime; one page session holds one thread count.
    ort.env.wasm.numThreads = cfg.threads;
    const bytes = await fetchBytes(cfg.url);
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'],
                                                              graphOptimizationLevel: 'all' });
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', makeInput(prod(cfg.input_shape)), cfg.input_shape) };
    return {
      run: async () => {
        const out = await session.run(feeds);
        return Object.values(out).map((t) => t.data);
      },
      dispose: () => session.release(),
      info: { threads: cfg.threads },
    };
  },
};

const PROGRESS_EVERY_MS = 500;

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return {
    median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2,
    min: s[0], max: s[s.length - 1], mean: s.reduce((a, b) => a + b, 0) / s.length,
  };
};

/**
 * configs: [{id, system: 'pysparse'|'litert'|'tflite'|'ort', url, threads, input_shape (NCHW)}]
 * opts: {runs, warmup, profileRuns, settleMs, progress(done, total, what)}
 *
 * Before each timed run the page idles settleMs (default 2): a runtime whose worker threads
 * spin for a while after a run (XNNPACK's pthreadpool does) would otherwise still hold a core
 * while the next system's run starts, so each system's time would depend on what ran before.
 * Not longer: on a virtual machine a core left idle for ~10 ms or more takes milliseconds to
 * wake, which every threaded runtime's next run would pay (docs/benchmarks.md).
 * Returns {environment, results: [{id, system, ..., load_ms, first_ms, samples_ms, median_ms, ...} | {id, error}]}
 */
export async function runBench(configs, opts = {}) {
  const runs = opts.runs ?? 20, warmup = opts.warmup ?? 3, profileRuns = opts.profileRuns ?? 5;
  const settleMs = opts.settleMs ?? 2;
  const settle = () => new Promise((resolve) => setTimeout(resolve, settleMs));
  const progress = opts.progress || globalThis.benchProgress || (() => {});
  const total = configs.length * (2 + warmup) + runs * configs.length;
  // Progress goes out at most every PROGRESS_EVERY_MS: each report is a round trip through the
  // browser to the driver, work that would otherwise share the cores with the next timed run.
  let done = 0, reported = -Infinity;
  const tick = async (what) => {
    done++;
    const now = performance.now();
    if (done < total && now - reported < PROGRESS_EVERY_MS) return;
    reported = now;
    await progress(done, total, what);
  };
  const live = [];
  const results = [];
  for (const cfg of configs) {
    const result = { ...cfg };
    results.push(result);
    try {
      const t0 = performance.now();
      const runner = await LOADERS[cfg.system](cfg);
      result.load_ms = performance.now() - t0;
      await tick(`load ${cfg.id}`);
      const t1 = performance.now();
      await runner.run();
      result.first_ms = performance.now() - t1;
      await tick(`first ${cfg.id}`);
      for (let i = 0; i < warmup; i++) { await runner.run(); await tick(`warm-up ${cfg.id}`); }
      result.info = runner.info;
      result.samples_ms = [];
      live.push({ cfg, runner, result });
    } catch (e) {
      result.error = String(e && e.message || e);
      done += 2 + warmup;
    }
  }
  for (let r = 0; r < runs; r++) {
    // each round starts one configuration later, so no system always runs first
    const order = live.map((_, i) => live[(i + r) % live.length]);
    for (const { cfg, runner, result } of order) {
      if (settleMs > 0) await settle();
      const t = performance.now();
      await runner.run();
      result.samples_ms.push(performance.now() - t);
      await tick(`round ${r + 1}/${runs} ${cfg.id}`);
    }
  }
  for (const { runner, result } of live) {
    const s = stats(result.samples_ms);
    Object.assign(result, { median_ms: s.median, min_ms: s.min, max_ms: s.max, mean_ms: s.mean });
    if (runner.profile && opts.profile !== false) {
      try { result.layers = runner.profile(profileRuns); } catch (e) { result.layers_error = String(e.message || e); }
    }
    try { await runner.dispose(); } catch { /* released with the page anyway */ }
  }
  return {
    environment: {
      userAgent: navigator.userAgent,
      hardwareConcurrency: navigator.hardwareConcurrency,
      crossOriginIsolated: globalThis.crossOriginIsolated === true,
    },
    runs, warmup, results,
  };
}
