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

/** Show `e`'s first line in the error banner. */
export function showError(e) {
  const text = message(e).split('\n')[0];
  $('error-text').textContent = text;
  $('error').hidden = false;
  console.warn('wgtrain page:', text);
}

/** Hide the error banner. */
export function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
}

/** The status line's state (`data-state`, read by the tests) and words. */
export function setStatus(stateName, text) {
  const s = $('status');
  s.dataset.state = stateName;
  s.textContent = text;
}

export const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
export const pct = (x, digits = 2) => `${(100 * x).toFixed(digits)} %`;
