// loadInWorker(): the same model API as load(), with inference in a worker (web/worker.mjs).
// run() is async; inputs are sent as transferable buffers (copies of the caller's arrays,
// unless {transfer: true}), image elements become ImageBitmaps cropped and resized on the
// way, and outputs come back transferred.

import { isNode, VARIANTS, variantFiles } from './features.mjs';
import { fitCrop, isImageDataLike, isPixelSource, pixelOptions, sourceSize } from './pixels.mjs';

const nodeModules = isNode
  ? { threads: await import('node:worker_threads'), url: await import('node:url') }
  : null;

function absoluteLocation(where) {
  if (where instanceof URL) return where.href;
  if (isNode) return /^[a-z][a-z0-9+.-]*:/i.test(where) ? where : nodeModules.url.pathToFileURL(where).href;
  return new URL(where, globalThis.location?.href).href;
}

function startWorker(url) {
  if (isNode) {
    const worker = new nodeModules.threads.Worker(url);
    return {
      post: (msg, transfer) => worker.postMessage(msg, transfer),
      listen: (onMessage, onError) => {
        worker.on('message', onMessage);
        worker.on('error', onError);
      },
      terminate: () => worker.terminate(),
    };
  }
  const worker = new Worker(url, { type: 'module' });
  return {
    post: (msg, transfer) => worker.postMessage(msg, transfer),
    listen: (onMessage, onError) => {
      worker.onmessage = (e) => onMessage(e.data);
      worker.onerror = (e) => onError(new Error(e.message || 'the pysparse worker failed to start'));
    },
    terminate: () => worker.terminate(),
  };
}

// One input value -> [value to post, buffers to transfer].
async function packInput(value, spec, opts, inputMeta) {
  if (value instanceof Float32Array) {
    const data = opts.transfer ? value : value.slice();
    return [data, [data.buffer]];
  }
  if (isPixelSource(value) && !isImageDataLike(value) && typeof createImageBitmap === 'function') {
    // Crop (letterboxed where asked) and resize to the model's input size here, then hand
    // the small bitmap over.
    const [, , height, width] = spec.shape;
    const c = fitCrop(opts.crop, sourceSize(value), width, height, pixelOptions(inputMeta, opts).resize);
    const bitmap = await createImageBitmap(value, c.x, c.y, c.width, c.height,
      { resizeWidth: width, resizeHeight: height, resizeQuality: 'low' });
    return [bitmap, [bitmap]];
  }
  return [value, []]; // ImageData and other cloneable values
}

/** A model running in a worker; the same API as Model, with async run(). */
class WorkerModel {
  #worker;
  #pending = new Map();
  #nextId = 1;
  #described;
  #closed = false;

  constructor(worker) {
    this.#worker = worker;
    worker.listen((msg) => this.#receive(msg), (error) => this.#fail(error));
  }

  #receive({ id, ok, result, error }) {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    if (ok) pending.resolve(result);
    else pending.reject(Object.assign(new Error(error.message), { name: error.name, status: error.status }));
  }

  #fail(error) {
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
  }

  call(type, payload = {}, transfer = []) {
    if (this.#closed) return Promise.reject(new Error('this model has been disposed'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.post({ id, type, ...payload }, transfer);
    });
  }

  async init(source, opts) {
    this.#described = await this.call('load', { source: source.value, opts }, source.transfer);
    return this;
  }

  get inputs() { return this.#described.inputs.map((t) => ({ name: t.name, shape: [...t.shape] })); }
  get outputs() { return this.#described.outputs.map((t) => ({ name: t.name, shape: [...t.shape] })); }
  get info() { return { ...this.#described.info, worker: true }; }

  /** Like Model.run, but async; opts.transfer = true hands over the caller's Float32Arrays. */
  async run(input, opts = {}) {
    this.wake(); // the worker's threads get going while the input is packed here
    const specs = this.#described.inputs;
    const single = !(input && typeof input === 'object' && !ArrayBuffer.isView(input) && !isPixelSource(input));
    if (single && specs.length !== 1) throw new Error(`this model has ${specs.length} inputs: pass {name: value}`);
    const named = single ? { [specs[0].name]: input } : input;
    const packed = {};
    const transfer = [];
    for (const [name, value] of Object.entries(named)) {
      const spec = specs.find((s) => s.name === name);
      if (!spec) throw new Error(`unknown input '${name}'; the model's inputs are: ${specs.map((s) => s.name).join(', ')}`);
      const [v, t] = await packInput(value, spec, opts, this.#described.info.metadata?.input);
      packed[name] = v;
      transfer.push(...t);
    }
    const cropDone = transfer.some((t) => typeof ImageBitmap === 'function' && t instanceof ImageBitmap);
    const { range, mean, std, resize } = opts;
    // A bitmap made here is the input's region already: the worker only maps its values.
    const workerOpts = cropDone ? { range, mean, std } : { crop: opts.crop, range, mean, std, resize };
    return this.call('run', { input: single ? packed[specs[0].name] : packed, opts: workerOpts }, transfer);
  }

  /** Like Model.wake: the worker's threads start while this thread prepares the input. */
  wake() {
    if (this.#closed || this.#described.info.threads <= 1) return; // nothing to wake
    this.#worker.post({ type: 'wake' }, []); // no id: the worker sends no reply
  }

  async setThreads(threads) {
    await this.call('setThreads', { threads });
  }

  /** Frees the model and stops the worker. */
  async dispose() {
    if (this.#closed) return;
    try {
      await this.call('dispose');
    } finally {
      this.#closed = true;
      this.#fail(new Error('this model has been disposed'));
      await this.#worker.terminate();
    }
  }
}

/**
 * Loads a model into a new worker. Same options as load(), plus opts.workerUrl.
 * The model source may be a URL (resolved against the page), an ArrayBuffer or typed array.
 */
export async function loadInWorker(source, opts = {}) {
  const { locateFile, workerUrl, ...rest } = opts;
  const payload = { ...rest };
  if (locateFile) {
    payload.files = {};
    for (const variant of Object.keys(VARIANTS)) {
      for (const name of variantFiles(variant)) payload.files[name] = absoluteLocation(locateFile(name));
    }
  }
  let src;
  if (typeof source === 'string' || source instanceof URL) {
    src = { value: absoluteLocation(source), transfer: [] };
  } else if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    const view = source instanceof ArrayBuffer ? new Uint8Array(source) : new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    const copy = view.slice();
    src = { value: copy, transfer: [copy.buffer] };
  } else if (typeof Blob === 'function' && source instanceof Blob) {
    src = { value: source, transfer: [] };
  } else {
    throw new TypeError('loadInWorker() takes a URL, an ArrayBuffer, a typed array or a Blob');
  }
  const worker = startWorker(workerUrl ?? new URL('./worker.mjs', import.meta.url));
  const model = new WorkerModel(worker);
  try {
    return await model.init(src, payload);
  } catch (e) {
    await worker.terminate();
    throw e;
  }
}
