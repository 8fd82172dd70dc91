// The worker side of loadInWorker(): one model per worker, inference off the main thread.
//
// Messages in: {id, type: 'load' | 'run' | 'wake' | 'setThreads' | 'dispose', ...};
// out: {id, ok: true, result} or {id, ok: false, error: {name, message, status}}. A message
// without an id (a notice: 'wake') gets no reply, and its failure is dropped.
// Output buffers are transferred back, never copied.

import { isNode } from './features.mjs';
import { load } from './pysparse.mjs';

let model = null;

const port = isNode ? (await import('node:worker_threads')).parentPort : globalThis;

function reply(message, transfer = []) {
  port.postMessage(message, transfer);
}

function describe(model) {
  return { inputs: model.inputs, outputs: model.outputs, info: model.info };
}

const handlers = {
  async load({ source, opts }) {
    if (model) throw new Error('this worker already holds a model');
    const { files, ...rest } = opts;
    const locateFile = files ? (name) => {
      if (!(name in files)) throw new Error(`no location given for engine file ${name}`);
      return files[name];
    } : undefined;
    model = await load(source, { ...rest, locateFile });
    return [describe(model)];
  },
  run({ input, opts }) {
    if (!model) throw new Error('no model loaded');
    const outputs = model.run(input, opts);
    if (typeof input?.close === 'function') input.close(); // ImageBitmap / VideoFrame we were given
    return [outputs, Object.values(outputs).map((o) => o.data.buffer)];
  },
  wake() {
    model?.wake();
    return [true];
  },
  setThreads({ threads }) {
    model.setThreads(threads);
    return [model.info.threads];
  },
  dispose() {
    model?.dispose();
    model = null;
    return [true];
  },
};

async function onMessage(data) {
  const { id, type } = data;
  try {
    const handler = handlers[type];
    if (!handler) throw new Error(`unknown message type ${type}`);
    const [result, transfer = []] = await handler(data);
    if (id !== undefined) reply({ id, ok: true, result }, transfer);
  } catch (e) {
    if (id === undefined) return;
    reply({ id, ok: false, error: { name: e?.name ?? 'Error', message: e?.message ?? String(e), status: e?.status } });
  }
}

if (isNode) port.on('message', onMessage);
else port.onmessage = (event) => onMessage(event.data);
