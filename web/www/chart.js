// The training curves: train loss, train accuracy and test accuracy against the step, on one
// canvas (loss on the left axis, accuracy on the right).

import { fmtInt } from './ui.js';

// The browser test finds the curves by these colours.
// Label size in CSS pixels.
const FONT_PX = 12;

const COLORS = { loss: '#e0662b', accuracy: '#2f6fde', test: '#1f9d55', grid: '#e6e9ef', axis: '#9aa1ad', text: '#6b7383', bg: '#ffffff' };

/**
 * Draw `run` (`{ totalSteps, points: [{ step, loss, accuracy }], tests: [{ step, accuracy }] }`,
 * or null before any run) on `canvas`; `canvas.dataset.points` says how many points it shows.
 */
export function drawCurves(canvas, run) {
  const c = canvas;
  const g = c.getContext('2d');
  // Drawn in CSS pixels on a backing store of the canvas's CSS size × devicePixelRatio, so the
  // labels are FONT_PX CSS pixels at any width (a phone's 390 px as a desktop's 1000) and sharp.
  // Without a layout (hidden) it keeps the canvas's own size.
  const dpr = window.devicePixelRatio || 1;
  const cssW = c.clientWidth || c.width / dpr, cssH = c.clientHeight || c.height / dpr;
  const bw = Math.max(1, Math.round(cssW * dpr)), bh = Math.max(1, Math.round(cssH * dpr));
  if (c.width !== bw) c.width = bw;
  if (c.height !== bh) c.height = bh;
  const sx = c.width / cssW, sy = c.height / cssH;
  g.setTransform(sx, 0, 0, sy, 0, 0);
  const W = cssW, H = cssH;
  g.fillStyle = COLORS.bg;
  g.fillRect(0, 0, W, H);
  g.font = `${FONT_PX}px system-ui, sans-serif`;
  // The label size in the canvas's own pixels (the browser test turns it into CSS pixels).
  c.dataset.fontPixels = String(FONT_PX * sx);
  // The legend, wrapped into as many rows as the width needs.
  const legend = [['train loss', COLORS.loss], ['train accuracy', COLORS.accuracy], ['test accuracy', COLORS.test]];
  const rows = [];
  {
    let lx = 12, row = [];
    for (const [label, color] of legend) {
      const w = 19 + g.measureText(label).width;
      if (row.length && lx + w > W - 8) {
        rows.push(row);
        row = [];
        lx = 12;
      }
      row.push([label, color, lx]);
      lx += w + 24;
    }
    rows.push(row);
  }
  const narrow = W < 520;
  const pad = { l: narrow ? 40 : 52, r: narrow ? 40 : 52, t: 14 + 17 * rows.length, b: 34 };
  const pw = W - pad.l - pad.r, ph = H - pad.t - pad.b;
  const pts = run?.points ?? [];
  c.dataset.points = String(pts.length);
  const total = Math.max(1, run?.totalSteps ?? 1);
  const maxLoss = Math.max(0.5, ...pts.map((p) => (Number.isFinite(p.loss) ? p.loss : 0))) * 1.05;
  const x = (step) => pad.l + (pw * step) / total;
  const yLoss = (v) => pad.t + ph * (1 - Math.min(v, maxLoss) / maxLoss);
  const yAcc = (v) => pad.t + ph * (1 - v);

  // Grid and axes.
  g.strokeStyle = COLORS.grid;
  g.lineWidth = 1;
  g.fillStyle = COLORS.text;
  for (let i = 0; i <= 5; i++) {
    const y = pad.t + (ph * i) / 5;
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(pad.l + pw, y); g.stroke();
    g.textAlign = 'right'; g.textBaseline = 'middle';
    g.fillText((maxLoss * (1 - i / 5)).toFixed(2), pad.l - 6, y);
    g.textAlign = 'left';
    g.fillText(`${100 - 20 * i}%`, pad.l + pw + 6, y);
  }
  g.strokeStyle = COLORS.axis;
  g.strokeRect(pad.l, pad.t, pw, ph);
  g.textAlign = 'center'; g.textBaseline = 'top';
  for (let i = 0; i <= 5; i++) {
    const s = Math.round((total * i) / 5);
    g.fillText(fmtInt(s), x(s), pad.t + ph + 6);
  }
  g.fillText('step', pad.l + pw / 2, pad.t + ph + 20);

  // Legend.
  g.textAlign = 'left'; g.textBaseline = 'middle';
  rows.forEach((row, r) => {
    const y = 13 + 17 * r;
    for (const [label, color, lx] of row) {
      g.fillStyle = color;
      g.fillRect(lx, y - 2, 14, 4);
      g.fillStyle = COLORS.text;
      g.fillText(label, lx + 19, y);
    }
  });

  if (!pts.length) {
    g.fillStyle = COLORS.text;
    g.textAlign = 'center';
    g.fillText(run ? 'waiting for the first chunk…' : 'curves appear here while training', pad.l + pw / 2, pad.t + ph / 2);
    return;
  }
  const line = (key, y, color) => {
    g.strokeStyle = color;
    g.lineWidth = 2.5;
    g.lineJoin = 'round';
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.step), y(p[key])) : g.moveTo(x(p.step), y(p[key]))));
    g.stroke();
    if (pts.length === 1) {
      g.fillStyle = color;
      g.beginPath(); g.arc(x(pts[0].step), y(pts[0][key]), 3, 0, 2 * Math.PI); g.fill();
    }
  };
  line('loss', yLoss, COLORS.loss);
  line('accuracy', yAcc, COLORS.accuracy);
  g.fillStyle = COLORS.test;
  g.strokeStyle = COLORS.test;
  g.lineWidth = 1.5;
  if (run.tests.length > 1) {
    g.beginPath();
    run.tests.forEach((p, i) => (i ? g.lineTo(x(p.step), yAcc(p.accuracy)) : g.moveTo(x(p.step), yAcc(p.accuracy))));
    g.stroke();
  }
  for (const p of run.tests) {
    g.beginPath(); g.arc(x(p.step), yAcc(p.accuracy), 4, 0, 2 * Math.PI); g.fill();
  }
}
