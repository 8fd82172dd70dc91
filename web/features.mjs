// Feature detection: which engine builds this JS environment can run.
//
// Each probe is a tiny wasm module (one function) that only validates where the feature
// exists; WebAssembly.validate compiles nothing and has no side effects.

const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const V128_ZERO = [0xfd, 0x0c, ...new Array(16).fill(0)]; // v128.const 0

// A module with one function of type () -> v128 whose body is `code`, then `end`.
function v128Function(code) {
  const body = [0x00, ...code, 0x0b]; // no locals, code, end
  return new Uint8Array([
    ...HEADER,
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type section: () -> v128
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x0a, body.length + 2, 0x01, body.length, ...body, // code section
  ]);
}

// SIMD128: return v128.const 0.
const SIMD_PROBE = v128Function(V128_ZERO);
// Relaxed SIMD: f32x4.relaxed_madd (0xfd 0x105) over three zero vectors.
const RELAXED_PROBE = v128Function([...V128_ZERO, ...V128_ZERO, ...V128_ZERO, 0xfd, 0x85, 0x02]);
// Threads: an imported shared memory (limits flag 3: shared, with maximum).
const SHARED_MEMORY_PROBE = new Uint8Array([
  ...HEADER,
  0x02, 0x09, 0x01, 0x01, 0x65, 0x01, 0x6d, 0x02, 0x03, 0x01, 0x01, // import "e" "m" memory shared 1..1
]);

function validates(bytes) {
  try {
    return typeof WebAssembly === 'object' && WebAssembly.validate(bytes);
  } catch {
    return false;
  }
}

export const isNode = typeof process === 'object' && typeof process.versions?.node === 'string' &&
  typeof window === 'undefined';
const nodeOs = isNode ? await import('node:os') : null;

/** Whether threads (SharedArrayBuffer + shared wasm memory) may be used here. Browsers
 * allow them only on cross-origin-isolated pages (COOP same-origin + COEP require-corp). */
function threadsAllowed() {
  if (typeof SharedArrayBuffer !== 'function' || typeof Atomics !== 'object') return false;
  if (isNode) return true;
  return globalThis.crossOriginIsolated === true;
}

/**
 * What this environment supports: {wasm, simd, relaxedSimd, threads, crossOriginIsolated,
 * cores}. `threads` is true only where the threaded build may run.
 */
export function detectFeatures() {
  const wasm = typeof WebAssembly === 'object' && typeof WebAssembly.validate === 'function';
  const simd = wasm && validates(SIMD_PROBE);
  let cores = 1;
  if (typeof navigator === 'object' && navigator.hardwareConcurrency) cores = navigator.hardwareConcurrency;
  else if (nodeOs) cores = nodeOs.availableParallelism?.() ?? nodeOs.cpus().length;
  return {
    wasm,
    simd,
    relaxedSimd: simd && validates(RELAXED_PROBE),
    threads: simd && threadsAllowed() && validates(SHARED_MEMORY_PROBE),
    crossOriginIsolated: isNode ? true : globalThis.crossOriginIsolated === true,
    cores,
  };
}

// The engine builds in web/dist/ (see wasm/Makefile): name -> files and needs.
export const VARIANTS = {
  'relaxed-threads': { file: 'pysparse-relaxed-threads', threads: true, needs: ['relaxedSimd', 'threads'] },
  'relaxed': { file: 'pysparse-relaxed', threads: false, needs: ['relaxedSimd'] },
  'simd-threads': { file: 'pysparse-simd-threads', threads: true, needs: ['threads'] },
  'simd': { file: 'pysparse-simd', threads: false, needs: ['simd'] },
};

/** Every file a variant may load, for hosts that relocate them (locateFile). */
export function variantFiles(variant) {
  const { file, threads } = VARIANTS[variant];
  return threads ? [`${file}.mjs`, `${file}.wasm`, `${file}.worker.js`] : [`${file}.mjs`, `${file}.wasm`];
}

/**
 * The variant to load and the thread count to use.
 * `threads`: a number, or 'auto' (the cores, at most 4, where threads are allowed).
 * More than one thread needs a threaded build; relaxed SIMD (fused multiply-add) beats plain
 * SIMD wherever the browser has it.
 */
export function chooseVariant(features, { threads = 'auto', variant } = {}) {
  if (!features.wasm) throw new Error('pysparse needs WebAssembly, which this environment lacks');
  if (!features.simd) {
    throw new Error('pysparse needs WebAssembly SIMD (128-bit), which this browser lacks; ' +
      'use a current Chrome, Edge, Firefox or Safari (16.4 or later)');
  }
  let wanted;
  if (threads === 'auto' || threads === undefined || threads === null) {
    wanted = features.threads ? Math.max(1, Math.min(4, features.cores)) : 1;
  } else {
    wanted = Number(threads);
    if (!Number.isInteger(wanted) || wanted < 1) throw new Error(`threads must be 'auto' or an integer >= 1, got ${threads}`);
  }
  if (variant !== undefined && variant !== null) {
    const spec = VARIANTS[variant];
    if (!spec) throw new Error(`unknown variant ${JSON.stringify(variant)}; known: ${Object.keys(VARIANTS).join(', ')}`);
    const missing = spec.needs.find((need) => !features[need]);
    if (missing) {
      throw new Error(`variant ${variant} needs ${missing === 'threads'
        ? 'threads (a cross-origin-isolated page: COOP same-origin + COEP require-corp)' : missing}, which is not available here`);
    }
    return { variant, threads: spec.threads ? wanted : 1 };
  }
  if (wanted > 1 && features.threads) {
    return { variant: features.relaxedSimd ? 'relaxed-threads' : 'simd-threads', threads: wanted };
  }
  if (features.relaxedSimd) return { variant: 'relaxed', threads: 1 };
  return { variant: 'simd', threads: 1 };
}
