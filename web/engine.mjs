// Loading an engine build (web/dist/*.mjs + .wasm) in browsers, workers and Node.
//
// The builds are Emscripten MODULARIZE + EXPORT_ES6 factories. We always fetch the .wasm
// bytes ourselves and hand them over as `wasmBinary`: that is one code path for every
// environment, and it avoids the factory's own Node loading path (which expects CommonJS's
// `require`/`__dirname` and breaks on Node 20's fetch).

import { isNode, variantFiles, VARIANTS } from './features.mjs';

const nodeModules = isNode
  ? { fs: await import('node:fs/promises'), url: await import('node:url'), module: await import('node:module') }
  : null;

const factories = new Map(); // url -> Promise<factory>, so each build is imported once

/** The default location of engine files: web/dist/ next to this module. */
export function defaultLocateFile(name) {
  return new URL(`./dist/${name}`, import.meta.url).href;
}

// A URL string or path -> an absolute URL (file: URLs for Node paths).
function toURL(where) {
  if (where instanceof URL) return where;
  if (isNode && !/^[a-z][a-z0-9+.-]*:/i.test(where)) return nodeModules.url.pathToFileURL(where);
  return new URL(where, globalThis.location?.href);
}

/** Bytes of a URL (or, in Node, a file path). */
export async function fetchBytes(where) {
  const url = toURL(where);
  if (url.protocol === 'file:' && nodeModules) {
    return new Uint8Array(await nodeModules.fs.readFile(url));
  }
  if (typeof fetch !== 'function') throw new Error(`cannot fetch ${url.href}: no fetch() in this environment`);
  const response = await fetch(url.href);
  if (!response.ok) throw new Error(`could not fetch ${url.href}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function importFactory(href) {
  if (!factories.has(href)) {
    if (isNode) {
      // The factory's Node branch refers to CommonJS globals; give it what it needs.
      globalThis.require ??= nodeModules.module.createRequire(import.meta.url);
      globalThis.__dirname ??= nodeModules.url.fileURLToPath(new URL('.', href));
    }
    factories.set(href, import(href).then((m) => m.default));
  }
  return factories.get(href);
}

/**
 * Instantiates one variant of the engine; resolves to the Emscripten module object.
 * `locateFile(name)` gives each file's URL (default: web/dist/ beside this module).
 */
export async function instantiate(variant, locateFile = defaultLocateFile) {
  const spec = VARIANTS[variant];
  const [mjsName, wasmName] = variantFiles(variant);
  const mjsURL = toURL(locateFile(mjsName));
  const [factory, wasmBinary] = await Promise.all([
    importFactory(mjsURL.href).catch((e) => {
      throw new Error(`could not load the engine (${variant}) from ${mjsURL.href}: ${e.message}`);
    }),
    fetchBytes(locateFile(wasmName)),
  ]);
  const options = { wasmBinary, print: () => {}, printErr: (s) => console.warn(`pysparse: ${s}`) };
  if (spec.threads) {
    options.mainScriptUrlOrBlob = mjsURL.href;
    // The pthread workers load `<file>.worker.js`; Node's Worker wants a URL object or path.
    options.locateFile = (name) => {
      const where = toURL(locateFile(name));
      return isNode ? where : where.href;
    };
  }
  let before;
  if (isNode) before = { ex: process.listeners('uncaughtException'), rej: process.listeners('unhandledRejection') };
  try {
    return await factory(options);
  } finally {
    if (isNode) {
      // The factory installs process-wide handlers that rethrow; leave the host's as they were.
      for (const l of process.listeners('uncaughtException')) if (!before.ex.includes(l)) process.off('uncaughtException', l);
      for (const l of process.listeners('unhandledRejection')) if (!before.rej.includes(l)) process.off('unhandledRejection', l);
    }
  }
}
