// The live frame-time chart: per-frame total time of each pipeline over the last frames,
// and the median time of each stage as stacked bars.

export const STAGES = ["preprocess", "palm", "landmarks", "postprocess", "draw"];
const STAGE_COLORS = { preprocess: "#a78bfa", palm: "#60a5fa", landmarks: "#f59e0b", postprocess: "#f472b6", draw: "#94a3b8" };

export function median(values) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * series: [{name, color, frames: [{total, preprocess, palm, ...}]}]; draws the last
 * `window` frames of each.
 */
export function drawChart(canvas, series, { window = 200 } = {}) {
  const dpr = globalThis.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width, cssH = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(cssW * dpr)) canvas.width = Math.round(cssW * dpr);
  if (canvas.height !== Math.round(cssH * dpr)) canvas.height = Math.round(cssH * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  ctx.font = "12px system-ui, sans-serif";
  const barsH = 22 * series.length + 18;
  const plot = { x: 44, y: 8, w: cssW - 52, h: cssH - barsH - 26 };
  const recent = series.map((s) => s.frames.slice(-window));
  // The x axis grows with the run up to `window` frames, so that a short run fills it.
  const span = Math.max(30, Math.min(window, Math.max(...recent.map((r) => r.length))));
  const all = recent.flat().map((f) => f.total);
  const top = Math.max(10, niceCeil(Math.max(...all, 0) * 1.1));

  // Axes and grid.
  ctx.strokeStyle = "#334155";
  ctx.fillStyle = "#94a3b8";
  ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4, y = plot.y + plot.h - (v / top) * plot.h;
    ctx.beginPath();
    ctx.moveTo(plot.x, y);
    ctx.lineTo(plot.x + plot.w, y);
    ctx.stroke();
    ctx.fillText(`${Math.round(v)}`, 4, y + 4);
  }
  ctx.fillText("ms / frame", plot.x + 4, plot.y + 12);

  // One line per pipeline.
  series.forEach((s, i) => {
    const frames = recent[i];
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    frames.forEach((f, j) => {
      const x = plot.x + (j / Math.max(1, span - 1)) * plot.w;
      const y = plot.y + plot.h - (Math.min(f.total, top) / top) * plot.h;
      j ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  });

  // Median per stage, stacked, one bar per pipeline, on the same scale.
  let y = plot.y + plot.h + 22;
  const scale = plot.w / top;
  series.forEach((s, i) => {
    const frames = recent[i];
    ctx.fillStyle = s.color;
    ctx.fillText(s.name, 4, y + 12);
    let x = plot.x;
    for (const stage of STAGES) {
      const m = median(frames.map((f) => f[stage] ?? 0));
      if (!(m > 0)) continue;
      ctx.fillStyle = STAGE_COLORS[stage];
      ctx.fillRect(x, y, m * scale, 16);
      x += m * scale;
    }
    ctx.fillStyle = "#e2e8f0";
    const total = median(frames.map((f) => f.total));
    if (total > 0) ctx.fillText(`median ${total.toFixed(1)} ms`, Math.min(x + 6, plot.x + plot.w - 110), y + 12);
    y += 22;
  });
  // Legend of the stages.
  let x = plot.x;
  for (const stage of STAGES) {
    ctx.fillStyle = STAGE_COLORS[stage];
    ctx.fillRect(x, y + 2, 10, 10);
    ctx.fillStyle = "#94a3b8";
    ctx.fillText(stage, x + 14, y + 11);
    x += ctx.measureText(stage).width + 30;
  }
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(Math.max(v, 1e-9)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
