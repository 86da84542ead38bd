// The Device card: what `adapterInfo()` says of the browser's WebGPU adapter, or, without
// one, plain words about the fallback (and the GPU choices in the forms turned off).

import { $, fmtInt } from './ui.js';

const DEVICE_TYPES = { Cpu: 'software (runs on the CPU)', DiscreteGpu: 'discrete GPU', IntegratedGpu: 'integrated GPU', VirtualGpu: 'virtual GPU' };

/** Show `info` (an `AdapterInfo`) in #adapter (`data-webgpu` true or false). */
export function showAdapter(info) {
  const el = $('adapter');
  el.dataset.webgpu = String(!!info.webgpu);
  el.replaceChildren();
  if (!info.webgpu) {
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = 'No WebGPU here: ' + (info.reason || 'this browser does not offer it') +
      '. Training runs on the CPU twins compiled to WebAssembly instead: the same numbers, only slower.';
    el.append(p);
    for (const id of ['device', 'verify-device']) {
      const sel = $(id);
      sel.value = 'cpu';
      sel.querySelector('option[value=gpu]').disabled = true;
    }
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
  add('Type', DEVICE_TYPES[info.deviceType] ?? info.deviceType ?? 'unknown');
  const l = info.limits ?? {};
  const mib = (b) => (b >= 1 << 20 ? `${fmtInt(b / (1 << 20))} MiB` : `${fmtInt(b)} B`);
  if (l.maxStorageBufferBindingSize) add('Max storage binding', mib(l.maxStorageBufferBindingSize));
  if (l.maxBufferSize) add('Max buffer', mib(l.maxBufferSize));
  if (l.maxComputeInvocationsPerWorkgroup) add('Invocations / workgroup', fmtInt(l.maxComputeInvocationsPerWorkgroup));
  if (l.maxComputeWorkgroupStorageSize) add('Workgroup memory', `${fmtInt(l.maxComputeWorkgroupStorageSize / 1024)} KiB`);
  if (info.features) add('Features', info.features.length ? info.features.join(', ') : 'none of note');
  el.append(dl);
}
