// wgtrain in the browser: the page glue over the JavaScript API of ./pkg/wgtrain_web.js (the
// form, the data, the trainer and its buttons). The parts live in their own modules: ui.js
// (errors, status, formats), adapter.js (the Device card), data.js (the data's bytes),
// chart.js (the curves), drawpad.js (drawing a digit), verify.js (kernel verification).
//
// One Trainer at a time, and one call on it at a time (wasm-bindgen objects are not
// re-entrant): every call goes through `withTrainer`, and training pauses (the chunk callback
// returns false) before anything else may touch the trainer.
//
// Messages appear where the user acted (ui.js `showError(e, near)`), beside the field they are
// about. A panic inside the module (a bug) rejects whatever the page was waiting for
// (`guard`), and the page carries on with what the panic did not touch (`recoverFromPanic`).

import init, * as wg from './pkg/wgtrain_web.js';
import { showAdapter } from './adapter.js';
import { drawCurves } from './chart.js';
import { SAMPLE_LABEL, sampleBytes, sortFiles, withFiles } from './data.js';
import { setupDrawPad } from './drawpad.js';
import { $, FIELDS, clearError, fieldError, fmtInt, guard, message, pct, rejectWaiting, setStatus, showError } from './ui.js';
import { runVerify, verifying } from './verify.js';

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

let pad = null; // the drawing pad (drawpad.js)

const curves = () => drawCurves($('curves'), state.run);
// Redrawn when its size changes (a phone turned, a window resized): chart.js sizes its pixels.
new ResizeObserver(() => curves()).observe($('curves'));

// ---------- the trainer lock ----------

async function withTrainer(fn) {
  if (!state.trainer) throw new Error('there is no model yet: train one or import one');
  if (state.trainerBusy) throw new Error('the model is busy; pause training first');
  state.trainerBusy = true;
  updateButtons();
  try {
    return await guard(fn(state.trainer));
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
  $('import-button').disabled = $('import').disabled;
  $('verify').disabled = !ready || verifying();
  for (const id of ['preset', 'arch', 'epochs', 'batch', 'lr', 'device', 'chunk', 'files', 'use-sample']) {
    $(id).disabled = busy;
  }
}

// ---------- data ----------

// A Dataset per trainer for the test set: Trainer.create may take ownership of it.
function makeTestSet(data = state.data) {
  if (!data.testImages || !data.testLabels) return undefined;
  return wg.Dataset.fromIdx(data.testImages, data.testLabels, 'test');
}

// `freeOld`: false after a panic, when the old set may be held by a call that never ended.
function setData(data, freeOld = true) {
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
  if (state.trainSet && freeOld) state.trainSet.free();
  state.trainSet = train;
  state.data = data;
  const s = $('data-status');
  s.dataset.source = data.label === SAMPLE_LABEL ? 'sample' : 'files';
  const label = data.label[0].toUpperCase() + data.label.slice(1);
  s.textContent = `${label}: ${fmtInt(train.length)} training images` +
    (testLen ? `, ${fmtInt(testLen)} test images` : ', no test set') + ` (${train.rows}×${train.cols}).`;
  $('use-sample').hidden = data.label === SAMPLE_LABEL;
}

async function loadSample() {
  setData(await sampleBytes());
}

async function useFiles(fileList) {
  clearError();
  const files = [...fileList];
  if (!files.length) return;
  if (state.running || state.trainerBusy) {
    showError('pause training before changing the data', $('drop'));
    return;
  }
  try {
    setData(await withFiles(state.data, sortFiles(files)));
  } catch (e) {
    showError(e, $('drop'));
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

// The form as `TrainOptions`: the preset's name (or the arch string that overrides it), the
// device and the numbers filled in. The library does the rest as `wgtrain train` does: a
// preset brings its hyperparameters, an arch string the CLI's defaults, and impossible values
// are refused with the option named. The page only turns the fields' text into numbers.
function readOptions() {
  const arch = $('arch').value.trim();
  const opts = { arch: arch || $('preset').value, device: $('device').value };
  const num = (key, whole) => {
    const field = FIELDS[key];
    const raw = $(field.id).value.trim();
    if (raw === '') return;
    const v = Number(raw);
    // Counts go to the API as unsigned integers; whether one is big enough is the API's call.
    if (whole ? !(Number.isSafeInteger(v) && v >= 0) : Number.isNaN(v)) {
      throw fieldError(key, `${field.name} must be a ${whole ? 'whole number' : 'number'}, not "${raw}"`);
    }
    opts[key] = v;
  };
  num('epochs', true);
  num('batchSize', true);
  num('lr', false);
  return opts;
}

/** Steps per chunk: a whole number of at least 1, or an error naming the field. */
function readChunk() {
  const raw = $('chunk').value.trim();
  const v = Number(raw);
  if (raw === '' || !Number.isSafeInteger(v) || v < 1) {
    throw fieldError('chunkSteps', `${FIELDS.chunkSteps.name} must be a whole number of at least 1, not "${raw}"`);
  }
  return v;
}

/** The form's options, or null after showing why they are invalid next to `near`; `chunk`:
 * the steps per chunk are checked too (training reads them). */
function optionsOrError(near, chunk) {
  try {
    if (chunk) readChunk();
    return readOptions();
  } catch (e) {
    showError(e, near);
    return null;
  }
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
    return await guard(wg.Trainer.create(opts, state.trainSet, test, modelBytes, modelName));
  } finally {
    // Still ours (borrowed, or refused before it was taken): free it. After a panic it may
    // stay borrowed for good, and is left to the module.
    try {
      if (test && test.__wbg_ptr) test.free();
    } catch (e) {
      console.warn('wgtrain page: the test set was not freed:', message(e));
    }
  }
}

// Replace the trainer only once the new one exists: a refused one loses nothing.
function adoptTrainer(t) {
  if (state.trainer) state.trainer.free();
  state.trainer = t;
  state.run = newRun(t);
  $('test-accuracy').textContent = '—';
  $('test-accuracy').dataset.value = '';
  if (!pad.dirty) pad.showPrediction(null);
  // What the run does with the settings that the library takes as they are: say so.
  const n = state.trainSet ? state.trainSet.length : 0;
  const b = state.run.batch;
  $('train-note').textContent = n && b > n
    ? `${FIELDS.batchSize.name} ${fmtInt(b)} is more than the ${fmtInt(n)} training images: ` +
      `each epoch is one step over all ${fmtInt(n)}.`
    : '';
}

const NOT_STARTED = 'Not started: see the message below.';
const RECOVERED = 'Stopped by an internal error; the page is ready again.';

/** The status after `e` stopped an action started with Train. */
function statusAfter(e) {
  if (e && e.panicked) setStatus('recovered', RECOVERED);
  else setStatus('refused', NOT_STARTED);
}

async function startTraining() {
  clearError();
  if (state.running || state.trainerBusy) return;
  const opts = optionsOrError($('train'), true);
  if (!opts) {
    statusAfter(null);
    return;
  }
  $('train-note').textContent = '';
  setStatus('preparing', 'Preparing the network and uploading the data…');
  state.trainerBusy = true;
  updateButtons();
  let t;
  let failed = null;
  try {
    t = await createTrainer(opts);
  } catch (e) {
    failed = e;
  } finally {
    state.trainerBusy = false;
    updateButtons();
  }
  // Once the fields are enabled again: the one the message is about takes the focus.
  if (failed) {
    showError(failed, $('train'));
    statusAfter(failed);
    return;
  }
  adoptTrainer(t);
  $('model-info').textContent = `${t.arch} on ${t.device}; training…`;
  curves();
  await trainLoop();
}

async function trainLoop() {
  const t = state.trainer;
  const run = state.run;
  if (!t || state.running || state.trainerBusy) return;
  clearError();
  let chunk;
  try {
    chunk = readChunk();
  } catch (e) {
    showError(e, $('train'));
    return;
  }
  state.running = true;
  state.pauseRequested = false;
  run.started = true;
  updateButtons();
  setStatus('training', statusText(run));
  let failed = null;
  try {
    await guard(t.train(chunk, (r) => {
      recordChunk(run, r);
      setStatus(state.pauseRequested ? 'pausing' : 'training', statusText(run, state.pauseRequested ? 'Pausing' : undefined));
      curves();
      if (state.pauseRequested) return false;
      return true;
    }));
  } catch (e) {
    failed = e;
  } finally {
    state.running = false;
    updateButtons();
  }
  if (failed) showError(failed, $('train'));
  if (state.trainer !== t) {
    if (failed) statusAfter(failed);
    return;
  }
  const done = t.done;
  await evaluateTest(done ? 'final' : 'paused');
  if (done) {
    setStatus('done', statusText(run, 'Done'));
    $('model-info').textContent = `${t.arch}, trained ${fmtInt(run.totalSteps)} steps on ${t.device}.`;
  } else {
    setStatus('paused', statusText(run, 'Paused'));
  }
  updateButtons();
  pad.predict();
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
      curves();
    }
  } catch (e) {
    showError(e, $('test-accuracy'));
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
    showError(e, $('download'));
  }
}

async function importModel(file) {
  clearError();
  if (!file) return;
  if (state.running || state.trainerBusy) {
    showError('pause training before importing a model', $('download'));
    return;
  }
  const opts = optionsOrError($('download'), false);
  if (!opts) return;
  state.trainerBusy = true;
  updateButtons();
  let t;
  let failed = null;
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    t = await createTrainer(opts, bytes, file.name);
  } catch (e) {
    failed = e;
  } finally {
    state.trainerBusy = false;
    updateButtons();
  }
  if (failed) {
    // The message names the file.
    showError(failed, $('download'));
    return;
  }
  adoptTrainer(t);
  curves();
  $('model-info').textContent = `${t.arch} imported from ${file.name}, on ${t.device}.`;
  setStatus('imported', `Imported ${file.name} (${t.arch}); Train starts a new run.`);
  await evaluateTest('import');
  updateButtons();
  pad.predict();
}

// ---------- the drawing pad's model ----------

// The trainer's reading of a drawn digit, or why there is none.
async function classify(pixels) {
  if (!state.trainer) return 'Train or import a model to read this digit.';
  if (state.running || state.trainerBusy) return 'Pause training to read this digit.';
  return Array.from(await withTrainer((t) => t.predict(pixels)));
}

const idleNote = () => (state.trainer ? 'Draw a digit on the black square.' : 'Train or import a model, then draw.');

// ---------- after a panic ----------

// Called (deferred) by the module's panic hook: settle what the page waited for, drop what the
// panic left in use, and go on with the rest (a trainer not in use keeps its model).
function recoverFromPanic(panicMessage) {
  const e = new Error(`the engine stopped on an internal error: ${panicMessage}`);
  e.panicked = true;
  // A trainer whose call panicked stays borrowed for good (its getters throw): it is lost.
  let lost = false;
  if (state.trainer) {
    try {
      void state.trainer.step;
    } catch {
      state.trainer = null;
      lost = true;
    }
  }
  // The training set may be held by the call that never ended: a fresh one from the bytes.
  if (state.data) {
    try {
      setData(state.data, false);
    } catch (err) {
      console.warn('wgtrain page: the data could not be reloaded:', message(err));
    }
  }
  if (lost) {
    $('model-info').textContent = 'The model was lost to the internal error: train or import one.';
    $('test-accuracy').textContent = '—';
    $('test-accuracy').dataset.value = '';
  }
  rejectWaiting(e);
  // After the rejected calls' handlers have run.
  setTimeout(() => {
    state.running = false;
    state.trainerBusy = false;
    if ($('error').hidden) showError(e, $('train'));
    setStatus('recovered', RECOVERED);
    updateButtons();
  }, 0);
}

// ---------- start ----------

async function main() {
  curves();
  pad = setupDrawPad({ classify, idleNote });
  try {
    await init();
  } catch (e) {
    showError(`could not load the WebAssembly module: ${message(e)}`);
    setStatus('error', 'Not loaded.');
    return;
  }
  window.wgtrain = wg; // for the browser tests and the console
  window.wgtrainPage = state;
  // The hook runs inside the panic: nothing may call the module until it has unwound.
  wg.onPanic((msg) => setTimeout(() => recoverFromPanic(msg), 0));
  wg.setFieldNames(Object.fromEntries(Object.entries(FIELDS).map(([key, f]) => [key, f.name])));

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
  // A real button (focusable, with a focus ring) opens the hidden file input.
  $('import-button').addEventListener('click', () => $('import').click());
  $('import').addEventListener('change', (e) => {
    importModel(e.target.files[0]);
    e.target.value = '';
  });
  $('verify').addEventListener('click', () => runVerify(updateButtons));
  $('error-close').addEventListener('click', clearError);
  $('files').addEventListener('change', (e) => {
    useFiles(e.target.files);
    e.target.value = '';
  });
  $('use-sample').addEventListener('click', () => loadSample().catch((e) => showError(e, $('drop'))));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  // The drop zone is the first tab stop: Enter or Space there opens the file chooser.
  drop.addEventListener('keydown', (e) => {
    if (e.target !== drop || (e.key !== 'Enter' && e.key !== ' ')) return;
    e.preventDefault();
    if (!$('files').disabled) $('files').click();
  });
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
