// pysparse: run .spnn models on the WebAssembly SIMD engine, in browsers and Node.
//
//   import { load } from './pysparse.mjs';
//   const model = await load('hand.spnn');
//   const out = model.run(canvas);          // {name: {data: Float32Array, shape}}
//
// The engine's C API (wasm/include/pysparse.h) is all this module uses.

import { chooseVariant, detectFeatures, isNode, VARIANTS } from './features.mjs';
import { defaultLocateFile, fetchBytes, instantiate } from './engine.mjs';
import { isPixelSource, pixelOptions, pixelsToTensor } from './pixels.mjs';

export { detectFeatures, chooseVariant, VARIANTS } from './features.mjs';
export { fitCrop, isPixelSource, pixelOptions } from './pixels.mjs';
export { loadInWorker } from './worker-client.mjs';

export const version = '0.1.0';

const STATUS = ['ok', 'format', 'unsupported', 'nomem', 'argument'];
const ERROR_MESSAGE_SIZE = 256; // SPNN_ERROR_MESSAGE_SIZE
const MAX_DIMS = 6;

/** An error the engine reported; `status` is 'format', 'unsupported', 'nomem' or 'argument'. */
export class PysparseError extends Error {
  constructor(message, status) {
    super(message);
    this.name = 'PysparseError';
    this.status = status;
  }
}

const engines = new Map(); // variant -> Promise<engine module>, shared by the models of a page

function engineFor(variant, locateFile) {
  // A custom locateFile may point elsewhere: cache by variant only for the default files.
  if (locateFile) return instantiate(variant, locateFile);
  if (!engines.has(variant)) {
    const p = instantiate(variant, defaultLocateFile);
    p.catch(() => engines.delete(variant));
    engines.set(variant, p);
  }
  return engines.get(variant);
}

/** The bytes of a model source: URL string, URL, ArrayBuffer, typed array or Blob. */
async function sourceBytes(source) {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer || (typeof SharedArrayBuffer === 'function' && source instanceof SharedArrayBuffer)) {
    return new Uint8Array(source);
  }
  if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  if (typeof Blob === 'function' && source instanceof Blob) return new Uint8Array(await source.arrayBuffer());
  if (typeof source === 'string' || source instanceof URL) return fetchBytes(source);
  throw new TypeError('load() takes a URL, an ArrayBuffer, a typed array or a Blob');
}

// The engine's memory now: it may grow (and with threads it is a SharedArrayBuffer), so
// views are made afresh after every call that can allocate.
function heapBuffer(m) {
  return (m.wasmMemory ?? m.asm?.memory)?.buffer ?? m.HEAPU8.buffer;
}

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/** A loaded model. Create it with load(); free it with dispose(). */
export class Model {
  #m; // the engine module
  #ptr; // spnn_model*
  #dims; // scratch for shapes
  #inputs;
  #outputs;
  #info;
  #inputMeta; // the metadata's `input` entry: range, mean, std, resize of pixel inputs
  #pixels; // pixelOptions() from it alone
  #views = { buffer: null, inputs: [] }; // typed arrays over the engine's memory, made again when it changes

  constructor(engine, ptr, info) {
    this.#m = engine;
    this.#ptr = ptr;
    this.#dims = engine._malloc(4 * MAX_DIMS);
    this.#inputs = this.#tensors(engine._spnn_num_inputs(ptr), engine._spnn_input_name, engine._spnn_input_shape);
    this.#outputs = this.#tensors(engine._spnn_num_outputs(ptr), engine._spnn_output_name, engine._spnn_output_shape);
    let metadata = {};
    try {
      metadata = JSON.parse(this.#string(engine._spnn_metadata(ptr)) || '{}');
    } catch {
      metadata = {};
    }
    this.#inputMeta = metadata.input && typeof metadata.input === 'object' ? metadata.input : {};
    try {
      this.#pixels = pixelOptions(this.#inputMeta);
    } catch {
      this.#pixels = pixelOptions({}); // a file with odd preprocessing fields: plain 0..1 pixels
    }
    this.#info = Object.freeze({
      ...info,
      threads: engine._spnn_get_num_threads(ptr),
      engineVersion: this.#string(engine._spnn_version()),
      buildVariant: this.#string(engine._spnn_build_variant()),
      arenaBytes: engine._spnn_arena_bytes(ptr) >>> 0,
      weightBytes: engine._spnn_weight_bytes(ptr) >>> 0,
      metadata,
    });
  }

  // Views of the engine's memory: kept from call to call (a run pays for no new ones) until
  // the memory grows, which gives it a new buffer. inputs[i] is the view of input i's buffer.
  #heap() {
    const buffer = heapBuffer(this.#m);
    if (this.#views.buffer !== buffer) {
      this.#views = { buffer, u8: new Uint8Array(buffer), f32: new Float32Array(buffer),
                      i32: new Int32Array(buffer), inputs: [] };
    }
    return this.#views;
  }

  #string(ptr) {
    if (!ptr) return '';
    const u8 = this.#heap().u8;
    let end = ptr;
    while (u8[end]) end++;
    return new TextDecoder().decode(u8.slice(ptr, end)); // slice: TextDecoder rejects shared views
  }

  #tensors(count, nameFn, shapeFn) {
    const list = [];
    for (let i = 0; i < count; i++) {
      const ndim = shapeFn(this.#ptr, i, this.#dims);
      const i32 = this.#heap().i32;
      const shape = Array.from(i32.subarray(this.#dims >> 2, (this.#dims >> 2) + ndim));
      list.push(Object.freeze({ name: this.#string(nameFn(this.#ptr, i)), shape: Object.freeze(shape), index: i }));
    }
    return Object.freeze(list);
  }

  #alive() {
    if (!this.#ptr) throw new Error('this model has been disposed');
  }

  /** [{name, shape}] of the model's inputs (NCHW). */
  get inputs() {
    return this.#inputs.map(({ name, shape }) => ({ name, shape: [...shape] }));
  }

  /** [{name, shape}] of the model's outputs. */
  get outputs() {
    return this.#outputs.map(({ name, shape }) => ({ name, shape: [...shape] }));
  }

  /**
   * {variant, threads, threadsRequested, threadsNote, features, engineVersion, buildVariant,
   * arenaBytes, weightBytes, fileBytes, metadata}; threadsNote says why fewer threads run
   * than were asked for ('' when as asked).
   */
  get info() {
    return { ...this.#info, threads: this.#ptr ? this.#m._spnn_get_num_threads(this.#ptr) : this.#info.threads };
  }

  // One input (tensor or pixels) as the Float32Array the engine reads.
  #toTensor(input, spec, opts) {
    if (isPixelSource(input)) {
      const custom = ['range', 'mean', 'std', 'resize'].some((k) => opts[k] !== undefined);
      // straight into the engine's input buffer: no copy afterwards
      return pixelsToTensor(input, spec.shape, custom ? pixelOptions(this.#inputMeta, opts) : this.#pixels, opts.crop,
                            this.#inputView(spec));
    }
    if (input instanceof Float32Array) return input;
    if (ArrayBuffer.isView(input) || Array.isArray(input)) {
      throw new TypeError(`input '${spec.name}' must be a Float32Array (got ${input.constructor.name}) or an image source`);
    }
    throw new TypeError(`input '${spec.name}' must be a Float32Array or an image source ` +
      '(ImageData, canvas, video, image, ImageBitmap, VideoFrame)');
  }

  // {name: value} for every input, from a single value or an object of named values.
  #namedInputs(input) {
    const single = input instanceof Float32Array || ArrayBuffer.isView(input) || Array.isArray(input) || isPixelSource(input);
    if (single || input === null || typeof input !== 'object') {
      if (this.#inputs.length !== 1) {
        throw new Error(`this model has ${this.#inputs.length} inputs (${this.#inputs.map((t) => t.name).join(', ')}): pass {name: value}`);
      }
      return { [this.#inputs[0].name]: input };
    }
    for (const key of Object.keys(input)) this.#inputSpec(key);
    return input;
  }

  // The input called `name`, or an error naming the model's inputs.
  #inputSpec(name) {
    const spec = this.#inputs.find((t) => t.name === name);
    if (!spec) {
      throw new Error(`unknown input '${name}'; the model's inputs are: ${this.#inputs.map((t) => t.name).join(', ')}`);
    }
    return spec;
  }

  /**
   * Runs the model. `input`: a Float32Array (NCHW, the model's input size), an image source
   * (resized to the input size, 0..255 mapped to the model's range, less mean, over std),
   * or {name: value}. opts.crop = {x, y, width, height} crops image sources first;
   * opts.resize ('stretch' or 'letterbox'), opts.range, opts.mean and opts.std override
   * what the model's metadata says.
   * Returns {outputName: {data: Float32Array, shape: number[]}} (fresh arrays).
   */
  run(input, opts = {}) {
    this.#alive();
    const m = this.#m;
    m._spnn_wake_threads?.(this.#ptr); // the workers get going while the inputs are prepared
    // inputData()'s own view of a one-input model's buffer, still current: nothing to prepare
    const inPlace = this.#inputs.length === 1 && input === this.#views.inputs[0] &&
      this.#views.buffer === heapBuffer(m);
    if (!inPlace) this.#writeInputs(input, opts);
    const status = m._spnn_run(this.#ptr);
    if (status !== 0) {
      throw new PysparseError(`run failed: ${this.#string(m._spnn_error(this.#ptr))}`, STATUS[status] ?? String(status));
    }
    const result = {};
    const f32 = this.#heap().f32;
    for (const spec of this.#outputs) {
      const ptr = m._spnn_output_data(this.#ptr, spec.index);
      const n = product(spec.shape);
      result[spec.name] = { data: f32.slice(ptr >> 2, (ptr >> 2) + n), shape: [...spec.shape] };
    }
    return result;
  }

  // Every input into the engine's input buffers, checked: copied there, unless already there.
  #writeInputs(input, opts) {
    const named = this.#namedInputs(input);
    for (const spec of this.#inputs) {
      if (!(spec.name in named)) throw new Error(`missing input '${spec.name}'`);
      const tensor = this.#toTensor(named[spec.name], spec, opts);
      const expected = product(spec.shape);
      if (tensor.length === 0 && tensor.buffer.byteLength === 0 && expected > 0) {
        throw new Error(`input '${spec.name}' is a view of memory that is gone (the engine's memory grew, ` +
          'or the buffer was transferred): call inputData() again');
      }
      if (tensor.length !== expected) {
        throw new Error(`input '${spec.name}' has ${tensor.length} values; the model expects ` +
          `${spec.shape.join('x')} = ${expected} (float32, NCHW)`);
      }
      const buffer = this.#inputView(spec);
      // already in the engine's input buffer (inputData(), or pixels written there): no copy
      if (tensor.byteOffset === buffer.byteOffset && tensor.buffer === buffer.buffer) continue;
      buffer.set(tensor);
    }
  }

  /**
   * The engine's own buffer for input `name` (default: the first) as a Float32Array (NCHW):
   * write the input into it and pass it to run(), which then reads it in place instead of
   * copying it in. Runs only read it, so it keeps its values from run to run. The same view
   * comes back on every call until the engine's memory grows (another model loaded into the
   * same engine), which makes it stale: get it again after that (run() reports a stale view).
   */
  inputData(name) {
    this.#alive();
    return this.#inputView(name === undefined ? this.#inputs[0] : this.#inputSpec(name));
  }

  #inputView(spec) {
    const views = this.#heap();
    if (!views.inputs[spec.index]) {
      const ptr = this.#m._spnn_input_data(this.#ptr, spec.index);
      if (!ptr) throw new PysparseError(`no buffer for input '${spec.name}'`, 'argument');
      views.inputs[spec.index] = new Float32Array(views.buffer, ptr, product(spec.shape));
    }
    return views.inputs[spec.index];
  }

  /**
   * Starts the worker threads now, so that they are running when the next run() begins
   * (run() wakes them too, but a thread woken from sleep may take a while to start). Call it
   * when an input is on its way, e.g. as a camera frame arrives. No-op on one thread.
   */
  wake() {
    this.#alive();
    this.#m._spnn_wake_threads?.(this.#ptr);
  }

  /** Threads used by run(), 1 .. the count given at load. */
  setThreads(n) {
    this.#alive();
    if (this.#m._spnn_set_num_threads(this.#ptr, n) !== 0) {
      throw new Error(`threads must be 1..${this.#info.threads} for this model (${this.#string(this.#m._spnn_error(this.#ptr))})`);
    }
  }

  /** Per-op timing: setProfiling(true), run(), then profile() -> [{name, op, kernel, us}]. */
  setProfiling(enabled) {
    this.#alive();
    this.#m._spnn_set_profiling(this.#ptr, enabled ? 1 : 0);
  }

  profile() {
    this.#alive();
    return JSON.parse(this.#string(this.#m._spnn_profile_json(this.#ptr)) || '[]');
  }

  /** Frees the model's memory in the engine. The model cannot be used afterwards. */
  dispose() {
    if (!this.#ptr) return;
    this.#m._spnn_free(this.#ptr);
    this.#m._free(this.#dims);
    this.#ptr = 0;
  }
}

/**
 * Loads a .spnn model.
 * @param source URL, path (Node), ArrayBuffer, typed array or Blob
 * @param opts.threads number or 'auto' (default): threads need a cross-origin-isolated page
 * @param opts.variant force 'simd', 'simd-threads', 'relaxed' or 'relaxed-threads' (default: the best available)
 * @param opts.locateFile (name) => URL of an engine file (default: dist/ next to this module)
 */
export async function load(source, opts = {}) {
  const features = detectFeatures();
  const choice = chooseVariant(features, opts);
  const bytes = await sourceBytes(source);
  const m = await engineFor(choice.variant, opts.locateFile);
  if (VARIANTS[choice.variant].threads) await readyWorkers(m, choice.threads - 1);
  try {
    return loadInto(m, bytes, choice, features, opts.threads);
  } catch (e) {
    // Anything but a reported error (a trap, an abort) leaves the instance unusable.
    if (!(e instanceof PysparseError) && !opts.locateFile) engines.delete(choice.variant);
    throw e;
  }
}

/**
 * Makes sure `count` idle pthread workers are loaded before the engine starts threads. A
 * new worker only starts once the page's event loop has seen it load, which cannot happen
 * while spnn_load blocks the main thread: so more threads than the idle pool would hang.
 */
async function readyWorkers(m, count) {
  const pool = m.PThread;
  if (!pool) return;
  const loading = [];
  while (pool.unusedWorkers.length < count) {
    pool.allocateUnusedWorker();
    const worker = pool.unusedWorkers[pool.unusedWorkers.length - 1];
    loading.push(new Promise((resolve) => pool.loadWasmModuleToWorker(worker, resolve)));
  }
  await Promise.all(loading);
  if (isNode) for (const w of pool.unusedWorkers) w.unref?.(); // idle workers must not keep Node alive
}

/** Why `running` threads are fewer than the number asked for ('' when they are not). */
export function threadsNote(requested, running, choice, features) {
  const asked = Number(requested);
  if (requested === 'auto' || requested === undefined || requested === null || !(running < asked)) return '';
  const lead = `${asked} threads asked for, ${running} running: `;
  if (!VARIANTS[choice.variant].threads) {
    if (!features.crossOriginIsolated) {
      return lead + 'threads need a cross-origin-isolated page (serve it with Cross-Origin-Opener-Policy: ' +
        'same-origin and Cross-Origin-Embedder-Policy: require-corp, as `pysparse serve` does)';
    }
    if (!features.threads) return lead + 'this browser has no shared WebAssembly memory (SharedArrayBuffer)';
    return lead + `the ${choice.variant} build runs one thread`;
  }
  return lead + `the engine runs at most ${running} threads`;
}

function loadInto(m, bytes, choice, features, requested) {
  const dataPtr = m._malloc(Math.max(1, bytes.length));
  const errPtr = m._malloc(ERROR_MESSAGE_SIZE + 4);
  const outPtr = errPtr + ERROR_MESSAGE_SIZE;
  if (!dataPtr || !errPtr) throw new PysparseError('out of memory while loading the model', 'nomem');
  try {
    const heap = new Uint8Array(heapBuffer(m));
    heap.set(bytes, dataPtr);
    heap[errPtr] = 0;
    const status = m._spnn_load(dataPtr, bytes.length, choice.threads, outPtr, errPtr, ERROR_MESSAGE_SIZE);
    const view = new Uint8Array(heapBuffer(m));
    if (status !== 0) {
      let end = errPtr;
      while (view[end] && end < errPtr + ERROR_MESSAGE_SIZE) end++;
      const message = new TextDecoder().decode(view.slice(errPtr, end)) || `status ${status}`;
      throw new PysparseError(message, STATUS[status] ?? String(status));
    }
    const ptr = new Int32Array(view.buffer)[outPtr >> 2];
    if (isNode && m.PThread) {
      // Running pool workers must not keep Node alive either: run() waits for them itself.
      for (const w of m.PThread.runningWorkers) w.unref?.();
    }
    const running = m._spnn_get_num_threads(ptr);
    return new Model(m, ptr, { variant: choice.variant, features, fileBytes: bytes.length,
      threadsRequested: requested ?? 'auto', threadsNote: threadsNote(requested, running, choice, features) });
  } finally {
    m._free(dataPtr);
    m._free(errPtr);
  }
}
