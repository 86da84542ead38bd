// The kernel-verification panel: the library's `verify` (every kernel family on random inputs
// against its CPU twin) on the device #verify-device names, its tally in #verify-result
// (`data-passed`, `data-failed`) and a table of the checks that failed.

import * as wg from './pkg/wgtrain_web.js';
import { $, clearError, guard, showError } from './ui.js';

/** Whether a verification is in flight (the Verify button stays disabled meanwhile). */
export function verifying() {
  return $('verify').dataset.running === 'true';
}

/** Run the verification; `onBusy()` is called when it starts and when it ends. */
export async function runVerify(onBusy) {
  clearError();
  const btn = $('verify');
  const out = $('verify-result');
  const device = $('verify-device').value;
  btn.dataset.running = 'true';
  onBusy();
  out.dataset.passed = '';
  out.dataset.failed = '';
  out.textContent = `Checking every kernel family on ${device === 'gpu' ? 'WebGPU' : 'the CPU'}…`;
  try {
    const t0 = performance.now();
    const r = await guard(wg.verify(device));
    const secs = (performance.now() - t0) / 1000;
    out.dataset.passed = String(r.passed);
    out.dataset.failed = String(r.failed);
    out.replaceChildren();
    const p = document.createElement('p');
    const tally = document.createElement('span');
    tally.className = r.failed ? 'bad' : 'ok';
    tally.textContent = `${r.passed} passed, ${r.failed} failed`;
    p.append(tally, ` on ${r.device} (seed ${r.seed}, ${secs.toFixed(1)} s)`);
    out.append(p);
    const failing = r.checks.filter((c) => !c.ok);
    if (failing.length) {
      const table = document.createElement('table');
      const head = document.createElement('tr');
      for (const h of ['family', 'kernel', 'shape', 'detail']) {
        const th = document.createElement('th');
        th.textContent = h;
        head.append(th);
      }
      table.append(head);
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
    showError(e, btn);
  } finally {
    btn.dataset.running = 'false';
    onBusy();
  }
}
