// The data's bytes: the committed MNIST sample (copied next to the page by web/build.sh) and
// MNIST files the user drops or chooses, sorted into their four parts by name. The bytes are
// parsed by the library (`Dataset.fromIdx`), not here.

/** The label of the committed sample (shown, and kept as `data.label`). */
export const SAMPLE_LABEL = 'the committed sample';

const SAMPLE = {
  trainImages: 'data/train-images-idx3-ubyte.gz',
  trainLabels: 'data/train-labels-idx1-ubyte.gz',
  testImages: 'data/t10k-images-idx3-ubyte.gz',
  testLabels: 'data/t10k-labels-idx1-ubyte.gz',
};

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`could not load ${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

/** The sample's four files: `{ trainImages, trainLabels, testImages, testLabels, label }`. */
export async function sampleBytes() {
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all(
    [SAMPLE.trainImages, SAMPLE.trainLabels, SAMPLE.testImages, SAMPLE.testLabels].map(fetchBytes));
  return { trainImages, trainLabels, testImages, testLabels, label: SAMPLE_LABEL };
}

// `train-images-idx3-ubyte.gz` -> 'trainImages', `t10k-labels-idx1-ubyte` -> 'testLabels', ...
function slotOf(name) {
  const n = name.toLowerCase();
  const part = /train/.test(n) ? 'train' : /t10k|test/.test(n) ? 'test' : null;
  const kind = /images|idx3/.test(n) ? 'Images' : /labels|idx1/.test(n) ? 'Labels' : null;
  return part && kind ? part + kind : null;
}

/**
 * `files` by the part each one is (`{ trainImages: File, ... }`, one to four of them); an error
 * for a name that is no MNIST file's or two files for one part.
 */
export function sortFiles(files) {
  const slots = {};
  for (const f of files) {
    const slot = slotOf(f.name);
    if (!slot) {
      throw new Error(`${f.name}: not an MNIST file name (expected train-images-idx3-ubyte, ` +
        'train-labels-idx1-ubyte, t10k-images-idx3-ubyte or t10k-labels-idx1-ubyte, raw or .gz)');
    }
    if (slots[slot]) throw new Error(`two files for the same part: ${slots[slot].name} and ${f.name}`);
    slots[slot] = f;
  }
  return slots;
}

/** `current` with the parts in `slots` (from [`sortFiles`]) replaced by those files' bytes. */
export async function withFiles(current, slots) {
  const next = { ...current };
  for (const [slot, f] of Object.entries(slots)) next[slot] = new Uint8Array(await f.arrayBuffer());
  const files = Object.values(slots);
  next.label = files.length === 4 ? 'your files'
    : `your files (${files.map((f) => f.name).join(', ')}) with the rest of ${current.label}`;
  return next;
}
