// The hand-tracking task API (web/hands/index.mjs) on a real hand photo with the packed
// MediaPipe palm and landmark models, in Node (ImageData-like frames need no canvas).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { HandLandmarker } from '../../web/hands/index.mjs';

const dir = process.env.PYSPARSE_HANDS_CASE;
if (!dir) throw new Error('PYSPARSE_HANDS_CASE is not set: run these through `pytest tests/test_hands_api.py`');
const c = JSON.parse(await readFile(path.join(dir, 'case.json'), 'utf8'));
const bytes = async (name) => new Uint8Array(await readFile(path.join(dir, name)));
const photo = { data: new Uint8ClampedArray((await bytes(c.photo)).buffer), width: c.width, height: c.height };
const blank = { data: new Uint8ClampedArray(c.width * c.height * 4).fill(255), width: c.width, height: c.height };

function assertHand(result) {
  assert.equal(result.landmarks.length, 1, 'one hand');
  assert.equal(result.landmarks[0].length, 21);
  assert.equal(result.worldLandmarks[0].length, 21);
  assert.ok(result.presence[0] > 0.5, `presence ${result.presence[0]}`);
  const inside = result.landmarks[0].filter((p) => p.x > 0 && p.x < 1 && p.y > 0 && p.y < 1).length;
  assert.ok(inside >= 19, `${inside} of 21 landmarks inside the frame`);
  const [h] = result.handedness[0];
  assert.ok(['Left', 'Right'].includes(h.categoryName) && h.score >= 0.5 && h.score <= 1);
  assert.deepEqual(result.handednesses, result.handedness);
  // world landmarks in metres: a hand spans centimetres
  const span = Math.max(...result.worldLandmarks[0].map((p) => Math.hypot(p.x, p.y, p.z)));
  assert.ok(span > 0.02 && span < 0.3, `world landmarks span ${span} m`);
}

function maxDistance(a, b) {
  return Math.max(...a.map((p, i) => Math.hypot(p.x - b[i].x, p.y - b[i].y)));
}

test('detectForVideo finds the hand, then tracks it without palm detection', async () => {
  const hands = await HandLandmarker.createFromOptions({
    palmModel: await bytes(c.palm), landmarkModel: await bytes(c.landmark), threads: 1 });
  try {
    const first = await hands.detectForVideo(photo, 0);
    assertHand(first);
    assert.equal(first.details.detected, true);
    assert.ok(first.details.timings.palm > 0 && first.details.timings.landmarks > 0);
    assert.ok(hands.roi && hands.roi.size > 0);
    const second = await hands.detectForVideo(photo, 33);
    assertHand(second);
    assert.equal(second.details.detected, false, 'tracked from the first frame');
    assert.equal(second.details.timings.palm, 0);
    assert.ok(maxDistance(first.landmarks[0], second.landmarks[0]) < 0.05);
    await assert.rejects(hands.detectForVideo(photo, 33), /timestamps must increase/);
    // detect(): a still image, palm detection every time, the tracked region kept
    const roi = hands.roi;
    const still = await hands.detect(photo);
    assert.equal(still.details.detected, true);
    assert.deepEqual(hands.roi, roi);
    // no hand: nothing found, and palm detection again on the next frame
    const none = await hands.detectForVideo(blank, 66);
    assert.deepEqual([none.landmarks, none.handedness, none.presence], [[], [], []]);
    assert.equal(hands.roi, null);
    const back = await hands.detectForVideo(photo, 100);
    assert.equal(back.details.detected, true);
    assertHand(back);
  } finally {
    await hands.close();
  }
});

test('the worker option and shared models give the same landmarks', async () => {
  const direct = await HandLandmarker.createFromOptions({
    palmModel: await bytes(c.palm), landmarkModel: await bytes(c.landmark), threads: 1 });
  const inWorker = await HandLandmarker.createFromOptions({
    palmModel: await bytes(c.palm), landmarkModel: await bytes(c.landmark), threads: 1, worker: true });
  // a second landmarker over the first one's loaded models (the demo's dense/sparse pair)
  const shared = new HandLandmarker(direct.palmModel, direct.landmarkModel);
  try {
    const a = await direct.detectForVideo(photo, 1);
    const b = await inWorker.detectForVideo(photo, 1);
    const s = await shared.detectForVideo(photo, 1);
    assert.equal(inWorker.landmarkModel.info.worker, true);
    assert.ok(maxDistance(a.landmarks[0], b.landmarks[0]) < 1e-4);
    assert.deepEqual(s.landmarks, a.landmarks);
  } finally {
    await inWorker.close();
    await direct.close();
  }
});

test('createFromOptions needs both models', async () => {
  await assert.rejects(HandLandmarker.createFromOptions({ palmModel: await bytes(c.palm) }), /palmModel and landmarkModel/);
});
