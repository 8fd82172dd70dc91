// Drawing a frame with its hand overlay: landmarks, bones, the tracked ROI and the palm.

function roiCorners({ cx, cy, size, rotation }) {
  const c = Math.cos(rotation) * size / 2, s = Math.sin(rotation) * size / 2;
  return [[-1, -1], [1, -1], [1, 1], [-1, 1]].map(([u, v]) => [cx + u * c - v * s, cy + u * s + v * c]);
}

/**
 * Draw `image` scaled to the canvas, then the pipeline result `r` ({hand, roi, palm}) over
 * it. `color` tints the bones (`connections`: pairs of landmark indices, from the model's
 * metadata); opts.roi draws the region the landmark model saw.
 */
export function drawResult(ctx, image, r, { color = "#34d399", roi = true, connections = [] } = {}) {
  const { width: W, height: H } = ctx.canvas;
  ctx.drawImage(image, 0, 0, W, H);
  if (!r) return;
  const sx = W / (image.width ?? image.videoWidth), sy = H / (image.height ?? image.videoHeight);
  const lw = Math.max(1.5, W / 320);
  ctx.save();
  if (roi && r.roi) {
    ctx.strokeStyle = "rgba(255,255,255,0.7)";
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 1;
    ctx.beginPath();
    roiCorners(r.roi).forEach(([x, y], i) => (i ? ctx.lineTo(x * sx, y * sy) : ctx.moveTo(x * sx, y * sy)));
    ctx.closePath();
    ctx.stroke();
    ctx.setLineDash([]);
  }
  if (r.palm) {
    ctx.fillStyle = "#60a5fa";
    for (const [x, y] of r.palm.keypoints) {
      ctx.beginPath();
      ctx.arc(x * sx, y * sy, lw * 1.5, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  const hand = r.hand;
  if (hand) {
    const p = hand.landmarks.map(([x, y]) => [x * sx, y * sy]);
    ctx.strokeStyle = color;
    ctx.lineWidth = lw * 1.6;
    ctx.lineCap = "round";
    ctx.beginPath();
    for (const [a, b] of connections) {
      ctx.moveTo(p[a][0], p[a][1]);
      ctx.lineTo(p[b][0], p[b][1]);
    }
    ctx.stroke();
    ctx.fillStyle = "#ef4444";
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = lw * 0.8;
    for (const [x, y] of p) {
      ctx.beginPath();
      ctx.arc(x, y, lw * 2, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    }
  }
  ctx.restore();
}
