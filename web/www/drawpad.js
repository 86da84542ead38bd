// The drawing pad: a digit drawn with the mouse, a finger or a pen on #draw (pointer events),
// what the network sees of it (#draw-preview, 28×28) and the model's reading (#prediction).
// The drawing becomes the network's input through the library's one preprocessing,
// `preprocessDigit` (`wgtrain predict` prepares a picture file the same way: cropped to the
// ink, fitted into 20×20 keeping the aspect, centre of mass at the centre).

import * as wg from './pkg/wgtrain_web.js';
import { $, pct, showError } from './ui.js';

/**
 * Set up the pad. The page answers two questions for it: `classify(pixels)` resolves to the
 * class probabilities of a network input, or to a note (a string) saying why there are none;
 * `idleNote()` gives the words shown while nothing is predicted. Returns `{ dirty, predict,
 * showPrediction }`: whether something is drawn, (re)read the drawing, show probabilities (or
 * null and an optional note).
 */
export function setupDrawPad({ classify, idleNote }) {
  const c = $('draw');
  const g = c.getContext('2d', { willReadFrequently: true });
  const draw = { down: false, last: null, dirty: false };

  function showPreview(pixels, size = 28) {
    const pg = $('draw-preview').getContext('2d');
    const img = pg.createImageData(size, size);
    for (let i = 0; i < size * size; i++) {
      const v = Math.round(255 * pixels[i]);
      img.data.set([v, v, v, 255], 4 * i);
    }
    pg.putImageData(img, 0, 0);
  }

  function showPrediction(probs, note) {
    const el = $('prediction');
    el.replaceChildren();
    if (!probs) {
      el.dataset.digit = '';
      const p = document.createElement('p');
      p.className = 'muted';
      p.textContent = note ?? idleNote();
      el.append(p);
      return;
    }
    let best = 0;
    for (let i = 1; i < probs.length; i++) if (probs[i] > probs[best]) best = i;
    el.dataset.digit = String(best);
    const d = document.createElement('p');
    d.className = 'digit';
    d.textContent = String(best);
    const small = document.createElement('small');
    small.textContent = `${pct(probs[best], 1)} sure`;
    d.append(small);
    const bars = document.createElement('div');
    bars.className = 'bars';
    probs.forEach((p, i) => {
      const label = document.createElement('span');
      label.textContent = String(i);
      const bar = document.createElement('div');
      bar.className = 'bar' + (i === best ? ' top' : '');
      bar.dataset.p = String(p);
      const fill = document.createElement('span');
      fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
      bar.append(fill);
      const v = document.createElement('span');
      v.className = 'p';
      v.textContent = pct(p, 1);
      bars.append(label, bar, v);
    });
    el.append(d, bars);
  }

  // The drawing as the network's input; null when nothing is drawn.
  function drawingToInput() {
    const { width: W, height: H } = c;
    const rgba = g.getImageData(0, 0, W, H).data;
    return wg.preprocessDigit(rgba, W, H) ?? null;
  }

  async function predict() {
    if (!draw.dirty) return;
    let pixels;
    try {
      pixels = drawingToInput();
    } catch (e) {
      return showError(e, $('prediction'));
    }
    if (!pixels) return showPrediction(null);
    showPreview(pixels);
    let answer;
    try {
      answer = await classify(pixels);
    } catch (e) {
      return showError(e, $('prediction'));
    }
    if (typeof answer === 'string') showPrediction(null, answer);
    else showPrediction(answer);
  }

  const clear = () => {
    g.fillStyle = '#000';
    g.fillRect(0, 0, c.width, c.height);
    draw.dirty = false;
    $('draw-preview').getContext('2d').clearRect(0, 0, 28, 28);
    showPrediction(null);
  };
  clear();
  const pos = (e) => {
    const r = c.getBoundingClientRect();
    return [((e.clientX - r.left) * c.width) / r.width, ((e.clientY - r.top) * c.height) / r.height];
  };
  const stroke = (from, to) => {
    g.strokeStyle = '#fff';
    g.fillStyle = '#fff';
    g.lineWidth = c.width / 13;
    g.lineCap = 'round';
    g.lineJoin = 'round';
    g.beginPath();
    g.moveTo(from[0], from[1]);
    g.lineTo(to[0], to[1]);
    g.stroke();
  };
  c.addEventListener('pointerdown', (e) => {
    e.preventDefault();
    // Keep the stroke when a finger or pen leaves the pad mid-line (touch-action: none in
    // style.css stops the page scrolling under it). A pointer the browser does not track (a
    // synthetic event) cannot be captured; the stroke goes on uncaptured.
    try {
      c.setPointerCapture(e.pointerId);
    } catch {
      /* not an active pointer */
    }
    draw.down = true;
    draw.last = pos(e);
    stroke(draw.last, draw.last);
    draw.dirty = true;
  });
  c.addEventListener('pointermove', (e) => {
    if (!draw.down) return;
    e.preventDefault();
    const p = pos(e);
    stroke(draw.last, p);
    draw.last = p;
  });
  const end = () => {
    if (!draw.down) return;
    draw.down = false;
    predict();
  };
  c.addEventListener('pointerup', end);
  c.addEventListener('pointercancel', end);
  c.addEventListener('pointerleave', end);
  $('clear').addEventListener('click', clear);

  return {
    get dirty() { return draw.dirty; },
    predict,
    showPrediction,
  };
}
