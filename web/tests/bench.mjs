// Training throughput in the browser beside the native build, in one run on one machine:
//
//   bash web/build.sh && cargo build --release && node web/tests/bench.mjs [--reps 3] [--epochs 3]
//       [--presets seed-small,seed-large] [--where browser-gpu,browser-cpu,native-gpu,native-cpu]
//       [--no-autotune] [--data DIR]
//
// For seed-small and seed-large on the committed sample (batch 100, 20 steps an epoch): the
// page's WebGPU adapter and its CPU twins (a fresh page each repetition; the first epoch, which
// pays for pipeline compilation, is left out), then `wgtrain train` on the first Vulkan
// adapter (`--device gpu`) and on the CPU engine (`--device cpu`). Prints the median images/s
// of each repetition's epochs, and the median, min and max over the repetitions, as a
// Markdown table. Timing covers the steps and the read of their metrics; test evaluation is
// not timed (as in `wgtrain train`'s per-epoch figure).

import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, serve } from './shared.mjs';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const WWW = path.join(ROOT, 'web', 'www');
const CHROMIUM = process.env.WGTRAIN_CHROMIUM || '/usr/bin/chromium';
const BIN = path.resolve(ROOT, process.env.WGTRAIN_BIN || 'target/release/wgtrain');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const REPS = arg('reps', 3);
const EPOCHS = arg('epochs', 3);
const list = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1].split(',') : dflt;
};
const PRESETS = list('presets', ['seed-small', 'seed-large']);
const WHERE = list('where', ['browser-gpu', 'browser-cpu', 'native-gpu', 'native-cpu']);
// --no-autotune: the browser runs the adapter's default matmul variants (autotune: false).
const AUTOTUNE = !process.argv.includes('--no-autotune');
// --data DIR: the four MNIST files from DIR (e.g. the full set) instead of the sample.
const DATA = list('data', [path.join(ROOT, 'assets/mnist-sample')])[0];
const FILES = ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'];
const DATA_B64 = FILES.map((f) => fs.readFileSync(path.join(DATA, f)).toString('base64'));

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};


/** One repetition in a fresh page: images/s of each epoch after the first, and the device. */
async function browserRun(browser, base, preset, device) {
  const page = await browser.newPage();
  try {
    await page.goto(base);
    await page.waitForSelector('body[data-ready=true]', { timeout: 60000 });
    return await page.evaluate(async ([preset, device, epochs, autotune, files]) => {
      const w = window.wgtrain;
      const b = files.map((f) => Uint8Array.from(atob(f), (c) => c.charCodeAt(0)));
      const train = w.Dataset.fromIdx(b[0], b[1], 'train');
      const test = w.Dataset.fromIdx(b[2], b[3], 'test');
      const t = await w.Trainer.create({ arch: preset, epochs, device, autotune }, train, test);
      // One rate per epoch: chunks of a whole epoch (they never cross its end).
      const perEpoch = Math.ceil(train.length / 100);
      const rates = [];
      let last;
      await t.train(perEpoch, (r) => { rates.push(r.imagesPerSecond); last = r; });
      const out = { device: t.device, rates: rates.slice(1), testAccuracy: last.testAccuracy };
      t.free(); train.free(); test.free();
      return out;
    }, [preset, device, EPOCHS, AUTOTUNE, DATA_B64]);
  } finally {
    await page.close();
  }
}

/** One native run: images/s of each epoch after the first, from `wgtrain train`'s JSON. */
function nativeRun(preset, device) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wgtrain-bench-'));
  const out = path.join(dir, 'm.safetensors');
  const args = ['train', '--preset', preset, '--data-dir', DATA,
    '--epochs', String(EPOCHS), '--device', device, '--out', out, '--checkpoint-every', '0'];
  const r = spawnSync(BIN, args, { encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || dir } });
  if (r.status !== 0) throw new Error(`${BIN} ${args.join(' ')}: ${r.stderr}`);
  const j = JSON.parse(fs.readFileSync(path.join(dir, 'm.json'), 'utf8'));
  fs.rmSync(dir, { recursive: true, force: true });
  const where = device === 'gpu' ? `${j.adapter} (${j.backend})` : `CPU engine, ${j.device}`;
  return { device: where, rates: j.epochs.slice(1).map((e) => e.images_per_sec), testAccuracy: j.final.test_acc };
}

const server = await serve(WWW);
const base = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
const rows = [];
try {
  for (const preset of PRESETS) {
    const cols = [
      ['browser-gpu', 'browser WebGPU', () => browserRun(browser, base, preset, 'gpu')],
      ['browser-cpu', 'browser CPU twins', () => browserRun(browser, base, preset, 'cpu')],
      ['native-gpu', 'native GPU', async () => nativeRun(preset, 'gpu')],
      ['native-cpu', 'native CPU', async () => nativeRun(preset, 'cpu')],
    ].filter((c) => WHERE.includes(c[0])).map((c) => c.slice(1));
    for (const [name, run] of cols) {
      const per = [];
      const acc = [];
      let device = '';
      for (let i = 0; i < REPS; i++) {
        const r = await run();
        device = r.device;
        per.push(median(r.rates));
        acc.push(r.testAccuracy);
      }
      rows.push({ preset, name, device, med: median(per), min: Math.min(...per), max: Math.max(...per), acc });
      console.error(`${preset} ${name} (${device}): ${per.map((x) => x.toFixed(0)).join(', ')} images/s; test accuracy ${acc.join(', ')}`);
    }
  }
} finally {
  await browser.close();
  server.close();
}
console.log(`${REPS} repetitions of ${EPOCHS} epochs (the first left out), batch 100, data ${path.relative(ROOT, DATA) || DATA}${AUTOTUNE ? '' : ', browser without autotuning'}`);
console.log('| preset | where | device | images/s (median) | min–max | final test accuracy |');
console.log('| --- | --- | --- | ---: | ---: | ---: |');
for (const r of rows) {
  const acc = [...new Set(r.acc.map((a) => (100 * a).toFixed(2)))].join(', ');
  console.log(`| ${r.preset} | ${r.name} | ${r.device} | ${r.med.toFixed(0)} | ${r.min.toFixed(0)}–${r.max.toFixed(0)} | ${acc} % |`);
}
