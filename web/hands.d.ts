// Type declarations of the hand-tracking task API (hands/index.mjs, `pysparse/hands`).

import type { LoadOptions, Model, ModelSource, PixelSource, WorkerModel } from './pysparse';

export interface HandLandmarkerOptions extends LoadOptions {
  /** The packed palm detection model: its URL or bytes, or a model already loaded (then shared, not freed by close()). */
  palmModel: ModelSource | Model | WorkerModel;
  /** The packed hand landmark model (dense or sparse), likewise. */
  landmarkModel: ModelSource | Model | WorkerModel;
  /** Run both models in a worker (loadInWorker). */
  worker?: boolean;
  /** URL of worker.mjs when `worker` is set; default: beside pysparse.mjs. */
  workerUrl?: string | URL;
  /** Below this hand presence the hand counts as lost and palm detection runs again (default 0.5). */
  minHandPresenceConfidence?: number;
}

/** x and y normalised to the frame's width and height (0..1); z depth from the wrist, in about x's scale. */
export interface NormalizedLandmark {
  x: number;
  y: number;
  z: number;
}

/** Metres, origin at the hand's approximate geometric centre. */
export interface Landmark {
  x: number;
  y: number;
  z: number;
}

export interface Category {
  score: number;
  index: number;
  /** 'Left' or 'Right', as MediaPipe labels a mirrored (selfie-view) frame. */
  categoryName: string;
  displayName: string;
}

/** The tracked region: a rotated square in frame pixels. */
export interface Roi {
  cx: number;
  cy: number;
  size: number;
  rotation: number;
}

export interface HandLandmarkerResult {
  /** One list of 21 landmarks per hand found (none or one). */
  landmarks: NormalizedLandmark[][];
  worldLandmarks: Landmark[][];
  handedness: Category[][];
  /** The same as handedness (MediaPipe's older name). */
  handednesses: Category[][];
  /** The landmark model's hand presence per hand found. */
  presence: number[];
  /** The pipeline's own record: palm detection run or not, region, per-stage times (ms). */
  details: {
    detected: boolean;
    presence?: number;
    roi: Roi | null;
    timings: { preprocess: number; palm: number; landmarks: number; postprocess: number };
    [key: string]: unknown;
  };
}

export type Frame = PixelSource;

export declare class HandLandmarker {
  static createFromOptions(options: HandLandmarkerOptions): Promise<HandLandmarker>;
  constructor(palm: Model | WorkerModel, landmark: Model | WorkerModel,
    options?: { minHandPresenceConfidence?: number; keepCrops?: boolean });
  readonly palmModel: Model | WorkerModel;
  readonly landmarkModel: Model | WorkerModel;
  /** The region the landmark model looks at next, or null (palm detection next). */
  readonly roi: Roi | null;
  /** Tracks the hand from frame to frame; timestamps (ms) must increase. */
  detectForVideo(frame: Frame, timestamp: number): Promise<HandLandmarkerResult>;
  /** One still image: palm detection every time. */
  detect(image: Frame): Promise<HandLandmarkerResult>;
  /** Forgets the tracked hand (a new source). */
  reset(): void;
  /** Frees the models it loaded. */
  close(): Promise<void>;
}
