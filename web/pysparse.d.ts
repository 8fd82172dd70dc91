// Type declarations of the pysparse JS runtime (pysparse.mjs).

export type Variant = 'simd' | 'simd-threads' | 'relaxed' | 'relaxed-threads';

export interface Features {
  wasm: boolean;
  simd: boolean;
  relaxedSimd: boolean;
  /** Threads may be used: SharedArrayBuffer and a cross-origin-isolated page (always in Node). */
  threads: boolean;
  crossOriginIsolated: boolean;
  cores: number;
}

export interface LoadOptions {
  /** Threads to run with: a number, or 'auto' (default: the cores, at most 4, where allowed). */
  threads?: number | 'auto';
  /** Force an engine build; default: the best this environment runs. */
  variant?: Variant;
  /** URL (or, in Node, path) of an engine file such as 'pysparse-simd.wasm'; default: dist/ beside pysparse.mjs. */
  locateFile?: (fileName: string) => string | URL;
}

export interface WorkerLoadOptions extends LoadOptions {
  /** URL of worker.mjs; default: beside pysparse.mjs. */
  workerUrl?: string | URL;
}

export interface TensorInfo {
  name: string;
  /** NCHW. */
  shape: number[];
}

export interface Tensor {
  data: Float32Array;
  shape: number[];
}

export type Outputs = Record<string, Tensor>;

export interface ImageDataLike {
  data: Uint8ClampedArray | Uint8Array;
  width: number;
  height: number;
}

export type PixelSource =
  | ImageData | ImageDataLike | HTMLCanvasElement | OffscreenCanvas | HTMLVideoElement | HTMLImageElement
  | SVGImageElement | ImageBitmap | VideoFrame;

/** A Float32Array in the model's NCHW layout, or pixels (RGB, resized, 0..255 mapped to the model's range). */
export type Input = Float32Array | PixelSource;

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** How pixel inputs become values; the model's metadata (`input`) gives the defaults. */
export interface PixelOptions {
  /** 'stretch' fills the input with the crop; 'letterbox' keeps its aspect ratio, with black bars. */
  resize?: 'stretch' | 'letterbox';
  /** The values pixel 0 and 255 map to (then less mean, over std). */
  range?: [number, number];
  /** Subtracted per channel (R, G, B) after the range mapping; one number for all three. */
  mean?: number | [number, number, number];
  /** Divides per channel after the mean; one number for all three. */
  std?: number | [number, number, number];
}

export interface RunOptions extends PixelOptions {
  /** For pixel inputs: the region of the source to use, in source pixels. */
  crop?: Rect;
  /** loadInWorker models only: hand the caller's Float32Arrays to the worker instead of copying them. */
  transfer?: boolean;
}

export interface ModelInfo {
  variant: Variant;
  threads: number;
  /** The `threads` given to load() ('auto' when none). */
  threadsRequested: number | 'auto';
  /** Why fewer threads run than were asked for (e.g. a page that is not cross-origin isolated); '' otherwise. */
  threadsNote: string;
  features: Features;
  engineVersion: string;
  /** The compiled build: 'simd128', 'simd128-threads' or 'relaxed-simd'. */
  buildVariant: string;
  /** Activation memory (bytes). */
  arenaBytes: number;
  /** Packed weights (bytes). */
  weightBytes: number;
  fileBytes: number;
  /** The metadata JSON stored in the .spnn file (docs/format.md). */
  metadata: Record<string, any>;
  /** True for loadInWorker models. */
  worker?: boolean;
}

export interface ProfileEntry {
  name: string;
  op: string;
  kernel: string;
  us: number;
}

export declare class PysparseError extends Error {
  /** What the engine reported: 'format', 'unsupported', 'nomem' or 'argument'. */
  status: string;
}

export declare class Model {
  readonly inputs: TensorInfo[];
  readonly outputs: TensorInfo[];
  readonly info: ModelInfo;
  run(input: Input | Record<string, Input>, opts?: RunOptions): Outputs;
  /** The engine's own buffer for an input (NCHW), the same view on every call until the
   * engine's memory grows; run(view) reads it in place. */
  inputData(name?: string): Float32Array;
  /** Starts the worker threads ahead of the next run() (e.g. as a frame arrives). */
  wake(): void;
  setThreads(threads: number): void;
  setProfiling(enabled: boolean): void;
  profile(): ProfileEntry[];
  dispose(): void;
}

export interface WorkerModel {
  readonly inputs: TensorInfo[];
  readonly outputs: TensorInfo[];
  readonly info: ModelInfo;
  run(input: Input | Record<string, Input>, opts?: RunOptions): Promise<Outputs>;
  wake(): void;
  setThreads(threads: number): Promise<void>;
  dispose(): Promise<void>;
}

export type ModelSource = string | URL | ArrayBuffer | ArrayBufferView | Blob;

export declare function load(source: ModelSource, opts?: LoadOptions): Promise<Model>;
export declare function loadInWorker(source: ModelSource, opts?: WorkerLoadOptions): Promise<WorkerModel>;
export declare function detectFeatures(): Features;
export declare function chooseVariant(features: Features, opts?: LoadOptions): { variant: Variant; threads: number };
export declare function isPixelSource(value: unknown): boolean;
/** The pixel preprocessing of a model: its metadata's `input` entry, overridden by `opts`. */
export declare function pixelOptions(inputMeta?: Record<string, any>, opts?: PixelOptions):
  { range: [number, number]; mean: number[]; std: number[]; resize: 'stretch' | 'letterbox' };
/** The source region that becomes the input (a letterboxed crop grows to the input's aspect ratio). */
export declare function fitCrop(crop: Rect | undefined, size: { width: number; height: number },
  width: number, height: number, resize?: 'stretch' | 'letterbox'): Rect;
export declare function threadsNote(requested: number | 'auto' | undefined, running: number,
  choice: { variant: Variant; threads: number }, features: Features): string;
export declare const VARIANTS: Record<Variant, { file: string; threads: boolean; needs: (keyof Features)[] }>;
export declare const version: string;
