// wgtrain in the browser: the page over the JavaScript API of ./pkg/wgtrain_web.js.
//
// One Trainer at a time, and one call on it at a time (wasm-bindgen objects are not
// re-entrant): every call goes through `withTrainer`, and training pauses (the chunk callback
// returns false) before anything else may touch the trainer.

import init, * as wg from './pkg/wgtrain_web.js';

const $ = (id) => document.getElementById(id);

const SAMPLE = {
  trainImages: 'data/train-images-idx3-ubyte.gz',
  trainLabels: 'data/train-labels-idx1-ubyte.gz',
  testImages: 'data/t10k-images-idx3-ubyte.gz',
  testLabels: 'data/t10k-labels-idx1-ubyte.gz',
};

const state = {
  adapter: null,
  // The raw IDX bytes of the current data (kept: a test Dataset is rebuilt for every trainer).
  data: null, // { trainImages, trainLabels, testImages, testLabels, label }
  trainSet: null, // Dataset of data.trainImages/trainLabels
  trainer: null,
  trainerBusy: false, // a call on the trainer is in flight
  running: false, // the train loop is in flight
  pauseRequested: false,
  run: null, // curves and rates of the current run
};

// ---------- errors and status ----------

function message(e) {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  try { return JSON.stringify(e); } catch { return String(e); }
}

function showError(e) {
  const text = message(e).split('\n')[0];
  $('error-text').textContent = text;
  $('error').hidden = false;
  console.warn('wgtrain page:', text);
}

function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
}

function setStatus(stateName, text) {
  const s = $('status');
  s.dataset.state = stateName;
  s.textContent = text;
}

const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
const pct = (x, digits = 2) => `${(100 * x).toFixed(digits)} %`;

// ---------- the trainer lock ----------

async function withTrainer(fn) {
  if (!state.trainer) throw new Error('there is no model yet: train one or import one');
  if (state.trainerBusy) throw new Error('the model is busy; pause training first');
  state.trainerBusy = true;
  updateButtons();
  try {
    return await fn(state.trainer);
  } finally {
    state.trainerBusy = false;
    updateButtons();
  }
}

function updateButtons() {
  const ready = document.body.dataset.ready === 'true';
  const busy = state.trainerBusy || state.running;
  $('train').disabled = !ready || busy || !state.trainSet;
  // Never touch a trainer getter here: during a call the trainer is borrowed.
  const paused = !!state.trainer && !state.running && !!state.run?.started && !state.run.last?.done;
  $('pause').disabled = !(state.running || (paused && !state.trainerBusy));
  $('pause').textContent = state.running ? 'Pause' : paused ? 'Resume' : 'Pause';
  $('download').disabled = !state.trainer || busy;
  $('import').disabled = !ready || busy || !state.trainSet;
  $('verify').disabled = !ready || $('verify').dataset.running === 'true';
  for (const id of ['preset', 'arch', 'epochs', 'batch', 'lr', 'device', 'chunk', 'files', 'use-sample']) {
    $(id).disabled = busy;
  }
}

// ---------- device ----------

function showAdapter(info) {
  const el = $('adapter');
  el.dataset.webgpu = String(!!info.webgpu);
  el.replaceChildren();
  if (!info.webgpu) {
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = 'No WebGPU here: ' + (info.reason || 'this browser does not offer it') +
      '. Training runs on the CPU twins compiled to WebAssembly instead: the same numbers, only slower.';
    el.append(p);
    const dev = $('device');
    dev.value = 'cpu';
    dev.querySelector('option[value=gpu]').disabled = true;
    $('verify-device').value = 'cpu';
    $('verify-device').querySelector('option[value=gpu]').disabled = true;
    return;
  }
  const dl = document.createElement('dl');
  dl.className = 'kv';
  const add = (k, v) => {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  };
  add('Adapter', info.name ?? '(unnamed)');
  add('Backend', info.backend === 'BrowserWebGpu' ? 'WebGPU' : `WebGPU (${info.backend ?? '?'})`);
  const types = { Cpu: 'software (runs on the CPU)', DiscreteGpu: 'discrete GPU', IntegratedGpu: 'integrated GPU', VirtualGpu: 'virtual GPU' };
  add('Type', types[info.deviceType] ?? info.deviceType ?? 'unknown');
  const l = info.limits ?? {};
  const mib = (b) => (b >= 1 << 20 ? `${fmtInt(b / (1 << 20))} MiB` : `${fmtInt(b)} B`);
  if (l.maxStorageBufferBindingSize) add('Max storage binding', mib(l.maxStorageBufferBindingSize));
  if (l.maxBufferSize) add('Max buffer', mib(l.maxBufferSize));
  if (l.maxComputeInvocationsPerWorkgroup) add('Invocations / workgroup', fmtInt(l.maxComputeInvocationsPerWorkgroup));
  if (l.maxComputeWorkgroupStorageSize) add('Workgroup memory', `${fmtInt(l.maxComputeWorkgroupStorageSize / 1024)} KiB`);
  if (info.features) add('Features', info.features.length ? info.features.join(', ') : 'none of note');
  el.append(dl);
}

// ---------- data ----------

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`could not load ${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

// A Dataset per trainer for the test set: Trainer.create may take ownership of it.
function makeTestSet(data = state.data) {
  if (!data.testImages || !data.testLabels) return undefined;
  return wg.Dataset.fromIdx(data.testImages, data.testLabels, 'test');
}

function setData(data) {
  // Both pairs must parse before anything is replaced.
  const train = wg.Dataset.fromIdx(data.trainImages, data.trainLabels, 'train');
  let test;
  try {
    test = makeTestSet(data);
  } catch (e) {
    train.free();
    throw e;
  }
  const testLen = test ? test.length : 0;
  if (test) test.free();
  if (state.trainSet) state.trainSet.free();
  state.trainSet = train;
  state.data = data;
  const s = $('data-status');
  s.dataset.source = data.label === 'the committed sample' ? 'sample' : 'files';
  const label = data.label[0].toUpperCase() + data.label.slice(1);
  s.textContent = `${label}: ${fmtInt(train.length)} training images` +
    (testLen ? `, ${fmtInt(testLen)} test images` : ', no test set') + ` (${train.rows}×${train.cols}).`;
  $('use-sample').hidden = data.label === 'the committed sample';
}

async function loadSample() {
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all(
    [SAMPLE.trainImages, SAMPLE.trainLabels, SAMPLE.testImages, SAMPLE.testLabels].map(fetchBytes));
  setData({ trainImages, trainLabels, testImages, testLabels, label: 'the committed sample' });
}

// `train-images-idx3-ubyte.gz` -> 'trainImages', `t10k-labels-idx1-ubyte` -> 'testLabels', ...
function slotOf(name) {
  const n = name.toLowerCase();
  const part = /train/.test(n) ? 'train' : /t10k|test/.test(n) ? 'test' : null;
  const kind = /images|idx3/.test(n) ? 'Images' : /labels|idx1/.test(n) ? 'Labels' : null;
  return part && kind ? part + kind : null;
}

async function useFiles(fileList) {
  clearError();
  const files = [...fileList];
  if (!files.length) return;
  if (state.running || state.trainerBusy) {
    showError('pause training before changing the data');
    return;
  }
  const slots = {};
  for (const f of files) {
    const slot = slotOf(f.name);
    if (!slot) {
      showError(`${f.name}: not an MNIST file name (expected train-images-idx3-ubyte, ` +
        'train-labels-idx1-ubyte, t10k-images-idx3-ubyte or t10k-labels-idx1-ubyte, raw or .gz)');
      return;
    }
    if (slots[slot]) {
      showError(`two files for the same part: ${slots[slot].name} and ${f.name}`);
      return;
    }
    slots[slot] = f;
  }
  const next = { ...state.data };
  for (const [slot, f] of Object.entries(slots)) next[slot] = new Uint8Array(await f.arrayBuffer());
  const four = Object.keys(slots).length === 4;
  next.label = four ? 'your files' : `your files (${Object.values(slots).map((f) => f.name).join(', ')}) with the rest of ${state.data.label}`;
  try {
    setData(next);
  } catch (e) {
    showError(e);
  }
}

// ---------- options ----------

function fillDefaults(preset) {
  const d = wg.defaults(preset);
  $('epochs').value = d.epochs ?? '';
  $('batch').value = d.batchSize ?? '';
  // f32 values come back as 0.05000000074505806: show what was meant.
  $('lr').value = d.lr === undefined ? '' : String(Number(d.lr.toPrecision(6)));
}

function readOptions() {
  const opts = { ...wg.defaults($('preset').value) };
  const arch = $('arch').value.trim();
  opts.arch = arch || $('preset').value;
  const num = (id, name, integer) => {
    const raw = $(id).value.trim();
    if (raw === '') return undefined;
    const v = Number(raw);
    if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
      throw new Error(`${name} must be a ${integer ? 'positive whole number' : 'positive number'}, not "${raw}"`);
    }
    return v;
  };
  const epochs = num('epochs', 'epochs', true);
  const batch = num('batch', 'batch size', true);
  const lr = num('lr', 'learning rate', false);
  if (epochs !== undefined) opts.epochs = epochs;
  if (batch !== undefined) opts.batchSize = batch;
  if (lr !== undefined) opts.lr = lr;
  opts.device = $('device').value;
  // An arch string takes the CLI's defaults for the rest; the preset's would not fit it.
  if (arch) {
    for (const k of ['optimizer', 'momentum', 'l2', 'lrSchedule', 'maxSteps', 'seed', 'shuffle']) delete opts[k];
  }
  for (const k of Object.keys(opts)) if (opts[k] === undefined || opts[k] === null) delete opts[k];
  return opts;
}

/** The form's options, or null after showing why they are invalid. */
function optionsOrError() {
  try {
    return readOptions();
  } catch (e) {
    showError(e);
    return null;
  }
}

function chunkSteps() {
  const v = Number($('chunk').value);
  return Number.isInteger(v) && v >= 1 ? v : 10;
}

// ---------- training ----------

function newRun(trainer) {
  const cfg = trainer.config;
  return {
    started: false,
    epochs: cfg.epochs,
    batch: cfg.batchSize,
    arch: trainer.arch,
    device: trainer.device,
    totalSteps: trainer.totalSteps,
    points: [], // { step, loss, accuracy }
    tests: [], // { step, accuracy }
    images: 0,
    seconds: 0,
    rates: [],
    last: null,
  };
}

async function createTrainer(opts, modelBytes, modelName) {
  // A fresh test Dataset each time: whether `create` borrows it or takes it, it is done with
  // it once the data is uploaded.
  const test = makeTestSet();
  try {
    return await wg.Trainer.create(opts, state.trainSet, test, modelBytes, modelName);
  } finally {
    // Still ours (borrowed, or refused before it was taken): free it.
    if (test && test.__wbg_ptr) test.free();
  }
}

// Replace the trainer only once the new one exists: a refused one loses nothing.
function adoptTrainer(t) {
  if (state.trainer) state.trainer.free();
  state.trainer = t;
  state.run = newRun(t);
  $('test-accuracy').textContent = '—';
  $('test-accuracy').dataset.value = '';
  if (!draw.dirty) showPrediction(null);
}

async function startTraining() {
  clearError();
  if (state.running || state.trainerBusy) return;
  const opts = optionsOrError();
  if (!opts) return;
  const before = $('status').dataset.state;
  const beforeText = $('status').textContent;
  setStatus('preparing', 'Preparing the network and uploading the data…');
  state.trainerBusy = true;
  updateButtons();
  let t;
  try {
    t = await createTrainer(opts);
  } catch (e) {
    showError(e);
    setStatus(before === 'preparing' ? 'idle' : before, beforeText);
    return;
  } finally {
    state.trainerBusy = false;
    updateButtons();
  }
  adoptTrainer(t);
  $('model-info').textContent = `${t.arch} on ${t.device}; training…`;
  drawCurves();
  await trainLoop();
}

async function trainLoop() {
  const t = state.trainer;
  const run = state.run;
  if (!t || state.running || state.trainerBusy) return;
  clearError();
  state.running = true;
  state.pauseRequested = false;
  run.started = true;
  updateButtons();
  setStatus('training', statusText(run));
  try {
    await t.train(chunkSteps(), (r) => {
      recordChunk(run, r);
      setStatus(state.pauseRequested ? 'pausing' : 'training', statusText(run, state.pauseRequested ? 'Pausing' : undefined));
      drawCurves();
      if (state.pauseRequested) return false;
      return true;
    });
  } catch (e) {
    showError(e);
  } finally {
    state.running = false;
    updateButtons();
  }
  if (state.trainer !== t) return;
  const done = t.done;
  await evaluateTest(done ? 'final' : 'paused');
  if (done) {
    setStatus('done', statusText(run, 'Done'));
    $('model-info').textContent = `${t.arch}, trained ${fmtInt(run.totalSteps)} steps on ${t.device}.`;
  } else {
    setStatus('paused', statusText(run, 'Paused'));
  }
  updateButtons();
  predictDrawing();
}

function recordChunk(run, r) {
  run.last = r;
  run.points.push({ step: r.step, loss: r.loss, accuracy: r.accuracy });
  if (r.testAccuracy !== undefined && r.testAccuracy !== null) run.tests.push({ step: r.step, accuracy: r.testAccuracy });
  // Images in the chunk: the rate times the chunk's time; sum both for the run's mean rate.
  // (No trainer getters here: the trainer is borrowed by `train` while it calls back.)
  const prevStep = run.points.length > 1 ? run.points[run.points.length - 2].step : 0;
  const images = Math.max(1, (r.step - prevStep) * run.batch);
  if (r.imagesPerSecond > 0) {
    run.images += images;
    run.seconds += images / r.imagesPerSecond;
    run.rates.push(r.imagesPerSecond);
  }
}

function meanRate(run) {
  return run.seconds > 0 ? run.images / run.seconds : 0;
}

function statusText(run, prefix) {
  const r = run.last;
  if (!r) return `${prefix ?? 'Starting'} · ${run.arch} on ${run.device}`;
  const epochs = run.epochs;
  const s = $('status');
  s.dataset.step = String(r.step);
  s.dataset.epoch = String(r.epoch);
  s.dataset.imagesPerSecond = String(meanRate(run));
  return `${prefix ? prefix + ' · ' : ''}epoch ${r.epoch}${epochs ? '/' + epochs : ''} · step ${fmtInt(r.step)}/${fmtInt(r.totalSteps)} · ` +
    `loss ${r.loss.toFixed(4)} · train acc ${pct(r.accuracy, 1)} · ${fmtInt(r.imagesPerSecond)} images/s ` +
    `(mean ${fmtInt(meanRate(run))}) · ${run.device}`;
}

async function evaluateTest(when) {
  if (!state.data?.testImages) {
    $('test-accuracy').textContent = 'no test set';
    return;
  }
  try {
    const e = await withTrainer((t) => t.evaluate('test'));
    const el = $('test-accuracy');
    el.dataset.value = String(e.accuracy);
    el.dataset.loss = String(e.loss);
    el.dataset.when = when;
    el.textContent = `Test accuracy ${pct(e.accuracy)}`;
    el.title = `${e.n} test images, mean loss ${e.loss.toFixed(4)}`;
    const run = state.run;
    if (run && when !== 'import' && state.trainer.step > 0) {
      const step = state.trainer.step;
      if (!run.tests.length || run.tests[run.tests.length - 1].step !== step) run.tests.push({ step, accuracy: e.accuracy });
      drawCurves();
    }
  } catch (e) {
    showError(e);
  }
}

function togglePause() {
  if (state.running) {
    state.pauseRequested = true;
    setStatus('pausing', 'Pausing after this chunk…');
    $('pause').disabled = true;
  } else if (state.trainer && !state.trainerBusy && !state.run?.last?.done) {
    trainLoop();
  }
}

// ---------- curves ----------

const COLORS = { loss: '#e0662b', accuracy: '#2f6fde', test: '#1f9d55', grid: '#e6e9ef', axis: '#9aa1ad', text: '#6b7383', bg: '#ffffff' };

function drawCurves() {
  const c = $('curves');
  const g = c.getContext('2d');
  const W = c.width, H = c.height;
  const pad = { l: 52, r: 52, t: 30, b: 34 };
  const pw = W - pad.l - pad.r, ph = H - pad.t - pad.b;
  g.fillStyle = COLORS.bg;
  g.fillRect(0, 0, W, H);
  g.font = '12px system-ui, sans-serif';
  const run = state.run;
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
  const legend = [['train loss', COLORS.loss], ['train accuracy', COLORS.accuracy], ['test accuracy', COLORS.test]];
  let lx = pad.l;
  g.textAlign = 'left'; g.textBaseline = 'middle';
  for (const [label, color] of legend) {
    g.fillStyle = color;
    g.fillRect(lx, 11, 14, 4);
    g.fillStyle = COLORS.text;
    g.fillText(label, lx + 19, 13);
    lx += g.measureText(label).width + 40;
  }

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

// ---------- download and import ----------

async function downloadModel() {
  clearError();
  try {
    const bytes = await withTrainer((t) => t.exportModel());
    const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = 'model.safetensors';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    showError(e);
  }
}

async function importModel(file) {
  clearError();
  if (!file) return;
  if (state.running || state.trainerBusy) {
    showError('pause training before importing a model');
    return;
  }
  const opts = optionsOrError();
  if (!opts) return;
  state.trainerBusy = true;
  updateButtons();
  let t;
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    t = await createTrainer(opts, bytes, file.name);
  } catch (e) {
    // The message names the file.
    showError(e);
    return;
  } finally {
    state.trainerBusy = false;
    updateButtons();
  }
  adoptTrainer(t);
  drawCurves();
  $('model-info').textContent = `${t.arch} imported from ${file.name}, on ${t.device}.`;
  setStatus('imported', `Imported ${file.name} (${t.arch}); Train starts a new run.`);
  await evaluateTest('import');
  updateButtons();
  predictDrawing();
}

// ---------- drawing ----------

const draw = { down: false, last: null, dirty: false };

function setupDrawing() {
  const c = $('draw');
  const g = c.getContext('2d', { willReadFrequently: true });
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
    c.setPointerCapture?.(e.pointerId);
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
    predictDrawing();
  };
  c.addEventListener('pointerup', end);
  c.addEventListener('pointercancel', end);
  c.addEventListener('pointerleave', end);
  $('clear').addEventListener('click', clear);
}

// The drawing as the network's input: the library's one preprocessing (`wgtrain predict`
// prepares a picture file the same way: cropped to the ink, fitted into 20×20 keeping the
// aspect, centre of mass at the centre); null when nothing is drawn.
function drawingToInput() {
  const c = $('draw');
  const { width: W, height: H } = c;
  const rgba = c.getContext('2d', { willReadFrequently: true }).getImageData(0, 0, W, H).data;
  return wg.preprocessDigit(rgba, W, H) ?? null;
}

function showPreview(pixels, size = 28) {
  const g = $('draw-preview').getContext('2d');
  const img = g.createImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    const v = Math.round(255 * pixels[i]);
    img.data.set([v, v, v, 255], 4 * i);
  }
  g.putImageData(img, 0, 0);
}

function showPrediction(probs, note) {
  const el = $('prediction');
  el.replaceChildren();
  if (!probs) {
    el.dataset.digit = '';
    const p = document.createElement('p');
    p.className = 'muted';
    p.textContent = note ?? (state.trainer ? 'Draw a digit on the black square.' : 'Train or import a model, then draw.');
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

async function predictDrawing() {
  if (!draw.dirty) return;
  let pixels;
  try {
    pixels = drawingToInput();
  } catch (e) {
    return showError(e);
  }
  if (!pixels) return showPrediction(null);
  showPreview(pixels);
  if (!state.trainer) return showPrediction(null, 'Train or import a model to read this digit.');
  if (state.running || state.trainerBusy) return showPrediction(null, 'Pause training to read this digit.');
  try {
    const probs = await withTrainer((t) => t.predict(pixels));
    showPrediction(Array.from(probs));
  } catch (e) {
    showError(e);
  }
}

// ---------- kernel verification ----------

async function runVerify() {
  clearError();
  const btn = $('verify');
  const out = $('verify-result');
  const device = $('verify-device').value;
  btn.dataset.running = 'true';
  updateButtons();
  out.dataset.passed = '';
  out.dataset.failed = '';
  out.textContent = `Checking every kernel family on ${device === 'gpu' ? 'WebGPU' : 'the CPU'}…`;
  try {
    const t0 = performance.now();
    const r = await wg.verify(device);
    const secs = (performance.now() - t0) / 1000;
    out.dataset.passed = String(r.passed);
    out.dataset.failed = String(r.failed);
    out.replaceChildren();
    const p = document.createElement('p');
    p.innerHTML = `<span class="${r.failed ? 'bad' : 'ok'}">${r.passed} passed, ${r.failed} failed</span>`;
    p.append(` on ${r.device} (seed ${r.seed}, ${secs.toFixed(1)} s)`);
    out.append(p);
    const failing = r.checks.filter((c) => !c.ok);
    if (failing.length) {
      const table = document.createElement('table');
      table.innerHTML = '<tr><th>family</th><th>kernel</th><th>shape</th><th>detail</th></tr>';
      for (const c of failing) {
        const tr = document.createElement('tr');
        for (const v of [c.family, c.name, c.shape, c.detail]) {
          const td = document.createElement('td');
          td.textContent = v;
          tr.append(td);
        }
        table.append(tr);
      }
      out.append(table);
    }
  } catch (e) {
    out.textContent = '';
    showError(e);
  } finally {
    btn.dataset.running = 'false';
    updateButtons();
  }
}

// ---------- start ----------

async function main() {
  drawCurves();
  setupDrawing();
  try {
    await init();
  } catch (e) {
    showError(`could not load the WebAssembly module: ${message(e)}`);
    setStatus('error', 'Not loaded.');
    return;
  }
  window.wgtrain = wg; // for the browser tests and the console
  window.wgtrainPage = state;

  const presetSel = $('preset');
  for (const p of wg.presets()) {
    const o = document.createElement('option');
    o.value = o.textContent = p;
    presetSel.append(o);
  }
  presetSel.value = wg.presets().includes('seed-small') ? 'seed-small' : wg.presets()[0];
  fillDefaults(presetSel.value);
  presetSel.addEventListener('change', () => fillDefaults(presetSel.value));

  $('train').addEventListener('click', startTraining);
  $('pause').addEventListener('click', togglePause);
  $('download').addEventListener('click', downloadModel);
  $('import').addEventListener('change', (e) => {
    importModel(e.target.files[0]);
    e.target.value = '';
  });
  $('verify').addEventListener('click', runVerify);
  $('error-close').addEventListener('click', clearError);
  $('files').addEventListener('change', (e) => {
    useFiles(e.target.files);
    e.target.value = '';
  });
  $('use-sample').addEventListener('click', () => loadSample().catch(showError));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    useFiles(e.dataTransfer.files);
  });

  const info = await wg.adapterInfo().catch((e) => ({ webgpu: false, reason: message(e) }));
  state.adapter = info;
  showAdapter(info);

  try {
    await loadSample();
  } catch (e) {
    showError(e);
    $('data-status').textContent = 'The sample could not be loaded; drop the MNIST files above.';
  }
  document.body.dataset.ready = 'true';
  setStatus('idle', 'Ready.');
  updateButtons();
}

main();
