// Frame sources for the demo: the bundled clip (stepped frame by frame), still images,
// the webcam and video files. Each gives frames as ImageBitmaps:
//   const f = await source.next();  // {image: ImageBitmap, index, label} or null at the end
// The caller closes f.image.

const ASSETS = new URL("./assets/", import.meta.url);

async function fetchOk(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`could not fetch ${url}: HTTP ${r.status} (run \`python -m pysparse.demo_assets\`)`);
  return r;
}

let clipManifest = null;
export async function clipInfo() {
  clipManifest ??= await (await fetchOk(new URL("clip.json", ASSETS))).json();
  return clipManifest;
}

/** The bundled clip, every frame in order (the same frames on every run); loops unless told. */
export class ClipSource {
  constructor(manifest, { loop = true, start = 0 } = {}) {
    this.kind = "clip";
    this.manifest = manifest;
    this.fps = manifest.fps;
    this.loop = loop;
    this.index = Math.max(0, Math.min(start, manifest.frames.length - 1));
    this.blobs = new Map(); // compressed frames only: a few MB for the whole clip
  }

  static async open(opts) {
    return new ClipSource(await clipInfo(), opts);
  }

  blob(i) {
    if (!this.blobs.has(i)) {
      const p = fetchOk(new URL(this.manifest.frames[i], ASSETS)).then((r) => r.blob());
      p.catch(() => this.blobs.delete(i));
      this.blobs.set(i, p);
    }
    return this.blobs.get(i);
  }

  async next() {
    const n = this.manifest.frames.length;
    if (this.index >= n) {
      if (!this.loop) return null;
      this.index = 0;
    }
    const i = this.index++;
    const image = await createImageBitmap(await this.blob(i));
    // Fetch the next frame while this one is processed.
    if (i + 1 < n) this.blob(i + 1).catch(() => {});
    return { image, index: i, label: this.manifest.labels?.[i] ?? `frame ${i}` };
  }

  stop() {}
}

/** One image, given again on every frame (tracking settles on it). */
export class StillSource {
  constructor(bitmap, label) {
    this.kind = "still";
    this.bitmap = bitmap;
    this.label = label;
    this.fps = 15;
    this.index = 0;
  }

  static async fromUrl(url, label) {
    const blob = await (await fetchOk(url)).blob();
    return new StillSource(await createImageBitmap(blob), label);
  }

  static async bundled(k) {
    const m = await clipInfo();
    const path = m.stills[k];
    if (!path) throw new Error(`no bundled still ${k}`);
    return StillSource.fromUrl(new URL(path, ASSETS), path.split("/").pop());
  }

  async next() {
    return { image: await createImageBitmap(this.bitmap), index: this.index++, label: this.label };
  }

  stop() {
    this.bitmap.close();
  }
}

/** A <video> element's frames: the webcam or a video file. */
export class VideoSource {
  constructor(video, kind, cleanup) {
    this.kind = kind;
    this.video = video;
    this.cleanup = cleanup;
    this.fps = 0; // as fast as frames come
    this.index = 0;
  }

  static async camera() {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error("this browser gives no camera access here (it needs https or localhost)");
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    const video = await VideoSource.element((v) => { v.srcObject = stream; });
    return new VideoSource(video, "camera", () => stream.getTracks().forEach((t) => t.stop()));
  }

  static async file(file) {
    const url = URL.createObjectURL(file);
    const video = await VideoSource.element((v) => { v.src = url; v.loop = true; });
    return new VideoSource(video, "file", () => URL.revokeObjectURL(url));
  }

  static async element(setSource) {
    const video = document.createElement("video");
    video.muted = true;
    video.playsInline = true;
    setSource(video);
    await new Promise((resolve, reject) => {
      video.onloadeddata = resolve;
      video.onerror = () => reject(new Error("this video cannot be played here"));
    });
    await video.play();
    return video;
  }

  // Wait for a frame not seen yet (or give up after 200 ms and take what is there).
  async fresh() {
    if (!this.video.requestVideoFrameCallback) return;
    await Promise.race([
      new Promise((r) => this.video.requestVideoFrameCallback(r)),
      new Promise((r) => setTimeout(r, 200)),
    ]);
  }

  async next() {
    if (this.index > 0) await this.fresh();
    const image = await createImageBitmap(this.video);
    return { image, index: this.index++, label: `${this.kind} frame ${this.index - 1}` };
  }

  stop() {
    this.video.pause();
    this.cleanup?.();
  }
}
