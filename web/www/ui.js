// What every part of the page shares: element lookup, the error banner, the status line and
// number formatting.

/** The element with id `id`. */
export const $ = (id) => document.getElementById(id);

/** One line of words for anything thrown (the API throws `Error`s with one-line messages). */
export function message(e) {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  try { return JSON.stringify(e); } catch { return String(e); }
}

/** The page's field for each option the API names in its errors (`Error.option`). */
export const FIELDS = {
  arch: { id: 'arch', name: 'Architecture' },
  batchSize: { id: 'batch', name: 'Batch size' },
  epochs: { id: 'epochs', name: 'Epochs' },
  lr: { id: 'lr', name: 'Learning rate' },
  device: { id: 'device', name: 'Device' },
  chunkSteps: { id: 'chunk', name: 'Steps per chunk' },
};

/** An `Error` about the option `option` (a key of FIELDS), as the API throws them. */
export function fieldError(option, text) {
  const e = new Error(text);
  e.option = option;
  return e;
}

/**
 * Show `e`'s first line where the user acted: the message box moves to just after `near`'s
 * row of buttons (or `near` itself; the top of the page without one) and is scrolled into
 * view. When `e` is about an option the page has a field for (`e.option`), that field is
 * marked invalid and focused.
 */
export function showError(e, near) {
  const text = message(e).split('\n')[0];
  const box = $('error');
  $('error-text').textContent = text;
  const place = near ? near.closest('.buttons') || near : document.querySelector('header');
  place.after(box);
  box.hidden = false;
  const field = e && FIELDS[e.option] ? $(FIELDS[e.option].id) : null;
  if (field) {
    field.setAttribute('aria-invalid', 'true');
    field.scrollIntoView({ block: 'nearest' });
    field.focus({ preventScroll: true });
  }
  box.scrollIntoView({ block: 'nearest' });
  console.warn('wgtrain page:', text);
}

/** Hide the message box and unmark the fields. */
export function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
  for (const el of document.querySelectorAll('[aria-invalid=true]')) el.removeAttribute('aria-invalid');
}

// ---------- promises the module may never settle ----------

// A panic traps the WebAssembly module: the promise of the call that panicked never settles.
// Every call the page waits on goes through `guard`; the panic handler rejects them all.
const waiting = new Set();

/** `p`, rejected when the module panics before it settles. */
export function guard(p) {
  return new Promise((resolve, reject) => {
    waiting.add(reject);
    Promise.resolve(p).then(resolve, reject).finally(() => waiting.delete(reject));
  });
}

/** Reject every guarded promise still pending with `e`. */
export function rejectWaiting(e) {
  const all = [...waiting];
  waiting.clear();
  for (const reject of all) reject(e);
}

/** The status line's state (`data-state`, read by the tests) and words. */
export function setStatus(stateName, text) {
  const s = $('status');
  s.dataset.state = stateName;
  s.textContent = text;
}

export const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
export const pct = (x, digits = 2) => `${(100 * x).toFixed(digits)} %`;
