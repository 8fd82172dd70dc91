// Helpers shared by the engine timing scripts (profile_model.mjs, batch_speed.mjs).

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** `count` floats in [0, 1) from a fixed seed: the same input in every run. */
export function pseudoRandom(count) {
  const x = new Float32Array(count);
  let s = 12345;
  for (let i = 0; i < count; i++) x[i] = ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) / (1 << 24);
  return x;
}
