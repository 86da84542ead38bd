//! wgtrain in the browser: a JavaScript API over the same engine, WGSL kernels and CPU twins
//! as the native build (wasm-bindgen; `web/build.sh` makes `web/www/pkg/`).
//!
//! Everything that waits for the GPU is async (a page's thread may not block); every error is
//! a JavaScript `Error` whose message is the one line the CLI would print, worded with the
//! option names (or the page's field names, `setFieldNames`), and whose `option` property
//! names the option it is about, if one. Where the browser offers no WebGPU, training runs on
//! the CPU twins compiled to WebAssembly. A run the page's memory cannot hold is refused
//! before anything is allocated; a panic (a bug) is reported to `onPanic`.
//!
//! A `Trainer` drives the engine one chunk of steps at a time so the page can draw between
//! chunks and pause; the chunk and the run's books (`train::Progress`: each epoch's order, its
//! end, `maxSteps`) are the ones `wgtrain train`'s epoch loop uses.

use std::path::Path;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wgtrain::backend::{reference::ReferenceBackend, Backend};
use wgtrain::error::{Setting, Wording};
use wgtrain::gpu::kernels::MatmulTile;
use wgtrain::gpu::GpuContext;
use wgtrain::model::{Arch, Model, Preset};
use wgtrain::train::{self, session, Engine, Optimizer, Position, TrainConfig, Which};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** What the page's WebGPU adapter is, or why there is none. */
export interface AdapterInfo {
  webgpu: boolean;
  /** Plain words: why this browser offers no WebGPU (training then runs on the CPU). */
  reason?: string;
  name?: string;
  backend?: string;
  deviceType?: string;
  limits?: Record<string, number>;
  features?: string[];
}
/** The `wgtrain train` flags, by the same names in camelCase; unset ones take the preset's. */
export interface TrainOptions {
  /** A preset (`seed-small`, `seed-large`, `lenet5`, `cnn`) or an arch string such as `784-128-10`. */
  arch?: string;
  optimizer?: "sgd" | "adam" | "adamw";
  lr?: number;
  momentum?: number;
  l2?: number;
  batchSize?: number;
  epochs?: number;
  maxSteps?: number;
  seed?: number;
  lrSchedule?: "constant" | "cosine" | "one-cycle";
  shuffle?: boolean;
  /** `auto` (WebGPU where offered, else the CPU), `gpu` or `cpu`. */
  device?: "auto" | "gpu" | "cpu";
  /** Tune the matmul variants on this adapter first (default true). */
  autotune?: boolean;
}
/** One chunk of training steps. */
export interface ChunkReport {
  /** 1-based epoch the chunk belongs to. */
  epoch: number;
  /** Steps done in the whole run. */
  step: number;
  totalSteps: number;
  /** Mean training loss and accuracy (0..1) over the chunk's samples. */
  loss: number;
  accuracy: number;
  imagesPerSecond: number;
  /** The chunk ended its epoch: the test set was evaluated (when there is one). */
  epochEnd: boolean;
  testLoss?: number;
  testAccuracy?: number;
  done: boolean;
}
export interface Evaluation { loss: number; accuracy: number; n: number }
export interface VerifyCheck { family: string; name: string; shape: string; ok: boolean; detail: string }
export interface VerifyReport { device: string; seed: number; passed: number; failed: number; checks: VerifyCheck[] }
"#;

#[wasm_bindgen(start)]
pub fn start() {
    #[cfg(target_arch = "wasm32")]
    {
        // A panic traps the module: the call (or the pending promise) never returns. The hook
        // logs it and tells the page (`onPanic`), which settles what it was waiting for.
        std::panic::set_hook(Box::new(|info| {
            console_error_panic_hook::hook(info);
            let message = format!(
                "{}{}",
                info.payload()
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic without a message"),
                info.location().map_or(String::new(), |l| format!(
                    " (at {}:{})",
                    l.file(),
                    l.line()
                ))
            );
            let handler = PANIC_HANDLER
                .try_with(|h| h.try_borrow().ok().and_then(|h| h.clone()))
                .ok()
                .flatten();
            if let Some(f) = handler {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&message));
            }
        }));
        // Warnings (a fallback to the CPU, a dropped tuning) reach the browser's console.
        let _ = console_log::init_with_level(log::Level::Warn);
    }
}

thread_local! {
    /// The page's `onPanic` handler.
    static PANIC_HANDLER: std::cell::RefCell<Option<js_sys::Function>> =
        const { std::cell::RefCell::new(None) };
    /// The page's names for its fields (`setFieldNames`), by option.
    static FIELD_NAMES: std::cell::RefCell<std::collections::BTreeMap<String, String>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Call `handler(message)` when code in this module panics (a bug: a panic traps the module,
/// so the call that panicked never returns and its promise never settles). The message is one
/// line. The handler runs inside the panic: it must not call this module (defer that work with
/// `setTimeout`); what was not in use at the panic (a trainer not being called, a dataset not
/// being read) can be used afterwards. `undefined` removes the handler.
#[wasm_bindgen(js_name = onPanic)]
pub fn on_panic(
    #[wasm_bindgen(unchecked_param_type = "((message: string) => void) | undefined")]
    handler: Option<js_sys::Function>,
) {
    PANIC_HANDLER.with(|h| *h.borrow_mut() = handler);
}

/// For tests of a page's recovery only: panics inside the module on the next turn of the event
/// loop, as a bug in the engine would, holding `holding` borrowed as `Trainer.create` holds its
/// datasets; the returned promise never settles (see `onPanic`).
#[wasm_bindgen(js_name = testOnlyPanic)]
pub async fn test_only_panic(message: String, holding: &Dataset) -> Result<JsValue, JsValue> {
    yield_now().await;
    panic!("{message} (while holding {} samples)", holding.inner.n)
}

/// The [`TrainOptions`] field a setting is, if it is one.
fn option_key(s: Setting) -> Option<&'static str> {
    Some(match s {
        Setting::Arch | Setting::Preset => "arch",
        Setting::Optimizer => "optimizer",
        Setting::LrSchedule => "lrSchedule",
        Setting::Lr => "lr",
        Setting::Momentum => "momentum",
        Setting::L2 => "l2",
        Setting::BatchSize => "batchSize",
        Setting::Epochs => "epochs",
        Setting::MaxSteps => "maxSteps",
        _ => return None,
    })
}

/// The option (a [`TrainOptions`] field) whose value an error is about, if one is.
fn error_option(e: &wgtrain::Error) -> Option<&'static str> {
    use wgtrain::error::LimitUse;
    use wgtrain::Error as E;
    match e {
        E::InvalidSetting { setting, .. } => option_key(*setting),
        E::Network { .. } | E::DataMismatch { .. } | E::OutOfMemory { .. } => Some("arch"),
        E::LimitExceeded {
            used_by: LimitUse::Buffer(_),
            ..
        } => Some("batchSize"),
        E::Kernel {
            out_of_memory: true,
            ..
        } => Some("batchSize"),
        E::Diverged { .. } => Some("lr"),
        _ => None,
    }
}

/// One line: the library's errors worded with the page's field names ([`set_field_names`])
/// or this API's option names ([`Options`]), anything else as it displays. An `Error` whose
/// `option` property names the option it is about (`"arch"`, `"batchSize"`, ...) when the
/// library's error is about one, so a page can show it beside that field.
fn js_err(e: impl std::fmt::Display + 'static) -> JsValue {
    let any: &dyn std::any::Any = &e;
    let (message, option) = match any.downcast_ref::<wgtrain::Error>() {
        Some(e) => (e.worded(&Options), error_option(e)),
        None => (e.to_string(), None),
    };
    let err = js_sys::Error::new(&message);
    if let Some(k) = option {
        let _ = js_sys::Reflect::set(&err, &"option".into(), &k.into());
    }
    err.into()
}

/// An `Error` with `message` about option `option` (see [`js_err`]).
fn option_err(option: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = js_sys::Reflect::set(&err, &"option".into(), &option.into());
    err.into()
}

/// The options (and `device`) a page may name with its own words.
const NAMEABLE: [&str; 11] = [
    "arch",
    "optimizer",
    "lrSchedule",
    "lr",
    "momentum",
    "l2",
    "batchSize",
    "epochs",
    "maxSteps",
    "device",
    "chunkSteps",
];

/// How a page names its fields, by option (`{ batchSize: "Batch size", device: "Device" }`):
/// error messages then say the page's words instead of `option batchSize`. Options not named
/// keep the API's names; names given before are replaced.
#[wasm_bindgen(js_name = setFieldNames)]
pub fn set_field_names(
    #[wasm_bindgen(unchecked_param_type = "Record<string, string>")] names: JsValue,
) -> Result<(), JsValue> {
    let names: std::collections::BTreeMap<String, String> =
        serde_wasm_bindgen::from_value(names).map_err(|e| js_err(format!("setFieldNames: {e}")))?;
    if let Some(k) = names.keys().find(|k| !NAMEABLE.contains(&k.as_str())) {
        return Err(js_err(format!(
            "setFieldNames: {k:?} is not one of {NAMEABLE:?}"
        )));
    }
    FIELD_NAMES.with(|f| *f.borrow_mut() = names);
    Ok(())
}

/// The page's name for option `key`, if it gave one.
fn field_name(key: &str) -> Option<String> {
    FIELD_NAMES.with(|f| f.borrow().get(key).cloned())
}

/// The words for the chunk-size argument of [`Trainer::train`].
fn chunk_words() -> String {
    field_name("chunkSteps").unwrap_or_else(|| "chunk steps".into())
}

/// How this API names what a caller can change: the page's field names when it gave them
/// ([`set_field_names`]), else the [`TrainOptions`] fields.
struct Options;

impl Wording for Options {
    fn setting(&self, s: Setting) -> std::borrow::Cow<'static, str> {
        if let Some(name) = option_key(s).and_then(field_name) {
            return name.into();
        }
        std::borrow::Cow::Borrowed(match s {
            Setting::Arch => "option arch",
            Setting::Preset => "option arch (a preset)",
            Setting::Optimizer => "option optimizer",
            Setting::LrSchedule => "option lrSchedule",
            Setting::Lr => "option lr",
            Setting::Momentum => "option momentum",
            Setting::L2 => "option l2",
            Setting::BatchSize => "option batchSize",
            Setting::Epochs => "option epochs",
            Setting::MaxSteps => "option maxSteps",
            Setting::Init => "starting model",
            other => other.describe(),
        })
    }
    fn use_cpu(&self) -> std::borrow::Cow<'static, str> {
        match field_name("device") {
            Some(name) => format!("set {name} to cpu").into(),
            None => "train with device \"cpu\"".into(),
        }
    }
    fn data_dir(&self) -> std::borrow::Cow<'static, str> {
        "give the four MNIST files (Dataset.fromIdx)".into()
    }
}

/// Plain JavaScript objects (not `Map`s) for the page.
fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_err)
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(f: &js_sys::Function, ms: i32) -> JsValue;
}

/// Let the page draw and handle input (the CPU path never waits on its own).
async fn yield_now() {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, 0);
    });
    let _ = JsFuture::from(p).await;
}

/// The browser's words for its adapter (`GPUAdapter.info`: vendor, architecture, device,
/// description), which wgpu's WebGPU backend leaves empty.
async fn browser_adapter_name() -> Option<String> {
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).ok();
    let gpu = get(&get(&js_sys::global(), "navigator")?, "gpu")?;
    let request: js_sys::Function = get(&gpu, "requestAdapter")?.dyn_into().ok()?;
    let promise: js_sys::Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = JsFuture::from(promise).await.ok()?;
    let info = get(&adapter, "info")?;
    let words: Vec<String> = ["vendor", "architecture", "device", "description"]
        .iter()
        .filter_map(|k| get(&info, k)?.as_string())
        .filter(|s| !s.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Why this page cannot use WebGPU, if it cannot: `navigator.gpu` missing (browser or flags),
/// or no adapter/device offered.
fn webgpu_missing() -> Option<String> {
    let nav = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let gpu = js_sys::Reflect::get(&nav, &"gpu".into()).ok();
    match gpu {
        Some(g) if !g.is_undefined() && !g.is_null() => None,
        _ => Some(
            "this browser offers no WebGPU (navigator.gpu is missing: an older browser, \
             WebGPU switched off, or a page not served from https or localhost)"
                .into(),
        ),
    }
}

async fn open_webgpu() -> Result<GpuContext, String> {
    if let Some(why) = webgpu_missing() {
        return Err(why);
    }
    let mut ctx = GpuContext::request(wgpu::Backends::BROWSER_WEBGPU)
        .await
        .map_err(|e| match e {
            // The native message advises installing drivers; a page's reader needs other words.
            wgtrain::Error::NoAdapter { .. } => "this browser has WebGPU but offers no adapter \
                 (WebGPU may be switched off for this GPU or driver, or blocked by a setting)"
                .to_string(),
            other => format!("the WebGPU adapter would not open: {other}"),
        })?;
    if ctx.info.name.is_empty() {
        // wgpu's WebGPU backend leaves the name empty; errors and reports name the adapter.
        ctx.info.name = browser_adapter_name()
            .await
            .unwrap_or_else(|| "unnamed WebGPU adapter".into());
    }
    Ok(ctx)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdapterInfo {
    webgpu: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<std::collections::BTreeMap<&'static str, f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<Vec<&'static str>>,
}

/// The WebGPU adapter the engine would use, with the limits that bound what fits (the
/// browser's, not the native driver's), or why there is none.
#[wasm_bindgen(js_name = adapterInfo, unchecked_return_type = "AdapterInfo")]
pub async fn adapter_info() -> Result<JsValue, JsValue> {
    let info = match open_webgpu().await {
        Err(reason) => AdapterInfo {
            webgpu: false,
            reason: Some(reason),
            name: None,
            backend: None,
            device_type: None,
            limits: None,
            features: None,
        },
        Ok(ctx) => {
            let l = &ctx.limits;
            let limits = [
                (
                    "maxStorageBufferBindingSize",
                    l.max_storage_buffer_binding_size as f64,
                ),
                ("maxBufferSize", l.max_buffer_size as f64),
                (
                    "maxComputeInvocationsPerWorkgroup",
                    l.max_compute_invocations_per_workgroup as f64,
                ),
                (
                    "maxComputeWorkgroupSizeX",
                    l.max_compute_workgroup_size_x as f64,
                ),
                (
                    "maxComputeWorkgroupStorageSize",
                    l.max_compute_workgroup_storage_size as f64,
                ),
                (
                    "maxComputeWorkgroupsPerDimension",
                    l.max_compute_workgroups_per_dimension as f64,
                ),
                (
                    "maxStorageBuffersPerShaderStage",
                    l.max_storage_buffers_per_shader_stage as f64,
                ),
            ]
            .into_iter()
            .collect();
            let f = ctx.device.features();
            let features = [
                ("subgroups", wgpu::Features::SUBGROUP),
                ("timestamp-query", wgpu::Features::TIMESTAMP_QUERY),
            ]
            .into_iter()
            .filter(|(_, x)| f.contains(*x))
            .map(|(n, _)| n)
            .collect();
            AdapterInfo {
                webgpu: true,
                reason: None,
                name: Some(ctx.info.name.clone()),
                backend: Some(format!("{:?}", ctx.info.backend)),
                device_type: Some(format!("{:?}", ctx.info.device_type)),
                limits: Some(limits),
                features: Some(features),
            }
        }
    };
    to_js(&info)
}

/// The presets, in order of size.
#[wasm_bindgen]
pub fn presets() -> Vec<String> {
    Preset::ALL.map(|p| p.name().to_string()).to_vec()
}

/// The network input for a picture of one digit, prepared exactly as `wgtrain predict`
/// prepares an image file (`wgtrain::data::image`: a light background inverted, cropped to the
/// ink, fitted into 20×20 keeping its aspect, centre of mass at the centre): `rgba` holds
/// `width × height` pixels of 4 bytes, row-major (a canvas's `getImageData(...).data`); the
/// result is `rows × cols` values in [0, 1] (28 × 28 unless given), what `Trainer.predict`
/// takes. `undefined` when the picture holds no digit (blank, or nothing stands out from the
/// background); an error when the sizes disagree.
#[wasm_bindgen(js_name = preprocessDigit)]
pub fn preprocess_digit(
    #[wasm_bindgen(unchecked_param_type = "Uint8Array | Uint8ClampedArray")] rgba: &[u8],
    width: u32,
    height: u32,
    rows: Option<usize>,
    cols: Option<usize>,
) -> Result<Option<Vec<f32>>, JsValue> {
    use wgtrain::data::image::{rgba_input, PictureError};
    let (rows, cols) = (rows.unwrap_or(28), cols.unwrap_or(28));
    match rgba_input(rgba, width, height, rows, cols) {
        Ok(x) => Ok(Some(x)),
        Err(PictureError::NoInk) => Ok(None),
        Err(e) => Err(js_err(format!("preprocessDigit: {e}"))),
    }
}

/// Options as the page sends them; unknown names are refused (a misspelt option would
/// otherwise be ignored).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrainOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    optimizer: Option<Optimizer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lr: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    momentum: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    l2: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lr_schedule: Option<train::LrSchedule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shuffle: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    /// Tune the matmul variants on this adapter first (default true; false runs the adapter
    /// defaults, as `WGTRAIN_AUTOTUNE=0` does natively).
    #[serde(skip_serializing_if = "Option::is_none")]
    autotune: Option<bool>,
}

/// `wgtrain train --preset NAME`'s settings, as [`TrainOptions`] (what a page fills its form
/// with).
#[wasm_bindgen(unchecked_return_type = "TrainOptions")]
pub fn defaults(preset: &str) -> Result<JsValue, JsValue> {
    let cfg = TrainConfig::preset(preset.parse::<Preset>().map_err(js_err)?);
    to_js(&TrainOptions {
        arch: Some(preset.to_string()),
        device: Some("auto".into()),
        autotune: Some(true),
        ..TrainOptions::from(&cfg)
    })
}

impl From<&TrainConfig> for TrainOptions {
    /// Every setting of `c` (the architecture as its `--arch` string; no device).
    fn from(c: &TrainConfig) -> Self {
        TrainOptions {
            arch: Some(c.arch.to_string()),
            optimizer: Some(c.optimizer),
            lr: Some(c.lr),
            momentum: Some(c.momentum),
            l2: Some(c.l2),
            batch_size: Some(c.batch),
            epochs: Some(c.epochs),
            max_steps: c.max_steps,
            seed: Some(c.seed as u32),
            lr_schedule: Some(c.lr_schedule),
            shuffle: Some(c.shuffle),
            device: None,
            autotune: None,
        }
    }
}

/// Bytes of memory a WebAssembly module can address in all (its 32-bit linear memory).
const WASM_MEMORY: u128 = 4 << 30;

/// Bytes of linear memory the module holds now (natively: none counted).
fn memory_in_use() -> u128 {
    #[cfg(target_arch = "wasm32")]
    let bytes = core::arch::wasm32::memory_size(0) as u128 * 65536;
    #[cfg(not(target_arch = "wasm32"))]
    let bytes = 0;
    bytes
}

/// `n` with thousands separators: `784,000,000`.
fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` bytes in words: `3,136,000,000 bytes (2.92 GiB)`.
fn fmt_bytes(n: u128) -> String {
    if n < 1 << 20 {
        format!("{} bytes", grouped(n))
    } else {
        format!(
            "{} bytes ({:.2} GiB)",
            grouped(n),
            n as f64 / (1u64 << 30) as f64
        )
    }
}

/// Refuse, before anything is allocated, a run whose memory the page cannot have: in one
/// [`wgtrain::Error::Network`] line naming the layer and the bytes it needs. In WebAssembly one
/// allocation holds at most `isize::MAX` bytes (2 GiB) and all of them at most 4 GiB (less what
/// the page holds already). The weights are made in WebAssembly memory on either device (the
/// model, and a copy to upload); on the CPU twins (`on_cpu`) the engine's buffers live there
/// too: the weights, their gradient, the optimiser's slots and two activation buffers per
/// layer for a batch. On WebGPU the adapter's limits are checked as each buffer is made
/// (`GpuBackend::alloc`), once its size is known to be a number this target can hold. A
/// layer's scratch space (a convolution's unfolded input) comes on top: the bound is a floor.
fn check_memory(cfg: &TrainConfig, on_cpu: bool) -> wgtrain::Result<()> {
    let arch = &cfg.arch;
    let shapes = arch.shapes()?;
    let batch = cfg.batch as u128;
    let one_piece = isize::MAX as u128;
    let left = if cfg!(target_arch = "wasm32") {
        WASM_MEMORY.saturating_sub(memory_in_use())
    } else {
        u128::MAX
    };
    let slots = cfg.optimizer.slots().len() as u128;
    // Copies of each parameter: the model and its upload copy; on the CPU twins also the
    // engine's weights, their gradient and the slots.
    let copies = if on_cpu { 4 + slots } else { 2 };
    let smaller = format!(
        "use a smaller network or a smaller {}",
        Options.setting(Setting::BatchSize)
    );
    let fail = |at: usize, reason: String| wgtrain::Error::Network {
        arch: arch.to_string(),
        reason: format!("layer {at} `{}`: {reason}", arch.layers[at - 1]),
    };
    // The input and label rows of a batch.
    let mut total: u128 = if on_cpu {
        4 * batch * (shapes[0].len() as u128 + 1)
    } else {
        0
    };
    // Each layer's input (not always the layer before: residual blocks).
    let inputs = arch.input_shapes();
    for (i, layer) in arch.layers.iter().enumerate() {
        let at = i + 1;
        let (weights, biases) = layer.kind().params(inputs[i]).map_or((0, 0), |(w, b)| {
            (w.iter().map(|&d| d as u128).product::<u128>(), b as u128)
        });
        let acts = batch * shapes[at].len() as u128;
        if 4 * weights > one_piece {
            return Err(fail(
                at,
                format!(
                    "its {} weights need {} in one piece, more than one allocation can \
                     hold here ({}); use a smaller network",
                    grouped(weights),
                    fmt_bytes(4 * weights),
                    fmt_bytes(one_piece),
                ),
            ));
        }
        // On the CPU twins the outputs are one allocation here; on WebGPU one buffer, sized
        // by the adapter's limits, whose word count must still be a number this target holds.
        let (acts_limit, what) = if on_cpu {
            (one_piece, "one allocation can hold here")
        } else {
            (4 * usize::MAX as u128, "this target can count")
        };
        if 4 * acts > acts_limit {
            return Err(fail(
                at,
                format!(
                    "its outputs for a batch of {batch} need {} in one piece, more than {what} \
                     ({}); {smaller}",
                    fmt_bytes(4 * acts),
                    fmt_bytes(acts_limit),
                ),
            ));
        }
        total += 4 * ((weights + biases) * copies + if on_cpu { 2 * acts } else { 0 });
        if total > left {
            let device = if on_cpu { "on the CPU twins " } else { "" };
            return Err(fail(
                at,
                format!(
                    "training {device}needs at least {} of WebAssembly memory up to this layer, \
                     more than the {} this page has left of the 4 GiB it can address; {}",
                    fmt_bytes(total),
                    fmt_bytes(left),
                    smaller
                ),
            ));
        }
    }
    Ok(())
}

/// The run `o` asks for, and its starting weights (`model`: a safetensors file's bytes, read
/// from `model_name`), as `wgtrain train [--preset P | --arch A] [--init FILE] ...` resolves
/// them. A preset's name brings its hyperparameters, an arch string the CLI's defaults; with a
/// model and no `arch`, the preset of the model's architecture (if any) gives the defaults.
///
/// Before any weights are made, the run is checked against what the page can hold
/// ([`check_memory`]; `on_cpu`: it trains on the CPU twins in WebAssembly memory).
fn resolve(
    o: &TrainOptions,
    model: Option<(&[u8], &str)>,
    on_cpu: bool,
) -> wgtrain::Result<(TrainConfig, Model)> {
    let mut ov = session::Overrides {
        arch: None,
        optimizer: o.optimizer,
        lr_schedule: o.lr_schedule,
        lr: o.lr,
        momentum: o.momentum,
        l2: o.l2,
        epochs: o.epochs,
        batch: o.batch_size,
        max_steps: o.max_steps,
        seed: o.seed.map(u64::from),
        no_shuffle: o.shuffle == Some(false),
        augment: None,
        normalize: None,
        ..Default::default()
    };
    let asked = o.arch.as_deref().map(str::trim);
    let base = match asked {
        Some(a) if Preset::from_name(a).is_some() => {
            let cfg = TrainConfig::preset(a.parse()?);
            // Named, so a model file must hold this network.
            ov.arch = Some(cfg.arch.clone());
            cfg
        }
        Some(a) => {
            ov.arch = Some(Arch::parse(a)?);
            TrainConfig::preset(Preset::SeedSmall)
        }
        None => TrainConfig::preset(Preset::SeedSmall),
    };
    // The settings the run will have (`session` resolves them again, with the weights).
    let settled = |base: &TrainConfig, arch: &Arch| -> wgtrain::Result<()> {
        let mut cfg = base.clone();
        cfg.arch = ov.arch.clone().unwrap_or_else(|| arch.clone());
        ov.apply(&mut cfg);
        cfg.validate()?;
        check_memory(&cfg, on_cpu)
    };
    let s = match model {
        None => {
            settled(&base, &base.arch)?;
            session::start(base, &ov, None, None)?
        }
        Some((bytes, name)) => {
            let name = Path::new(name);
            let (m, meta) = Model::from_bytes(bytes, name)?;
            let mut base = match (asked, Preset::ALL.into_iter().find(|p| p.arch() == m.arch)) {
                (None, Some(p)) => TrainConfig::preset(p),
                _ => base,
            };
            // A model trained on normalised inputs predicts (and trains on) inputs normalised
            // the same way.
            let n = wgtrain::train::saved_normalize(&meta)?;
            if !n.is_off() {
                base.normalize = n;
            }
            settled(&base, &m.arch)?;
            session::start_from(base, &ov, m, name)?
        }
    };
    Ok((s.cfg, s.model))
}

/// A training or test set, resident in WebAssembly memory until a [`Trainer`] uploads it.
#[wasm_bindgen]
pub struct Dataset {
    inner: wgtrain::data::Dataset,
}

#[wasm_bindgen]
impl Dataset {
    /// Images and labels from IDX files (raw or gzipped, as MNIST ships them); `name` names
    /// the pair in errors (e.g. `train`).
    #[wasm_bindgen(js_name = fromIdx)]
    pub fn from_idx(images: &[u8], labels: &[u8], name: &str) -> Result<Dataset, JsValue> {
        let inner = wgtrain::data::split_from_bytes(
            images,
            Path::new(&format!("{name} images")),
            labels,
            Path::new(&format!("{name} labels")),
        )
        .map_err(js_err)?;
        Ok(Dataset { inner })
    }

    /// Samples.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> usize {
        self.inner.n
    }

    #[wasm_bindgen(getter)]
    pub fn rows(&self) -> usize {
        match self.inner.shape {
            wgtrain::data::SampleShape::Image { h, .. } => h,
            wgtrain::data::SampleShape::Flat(_) => 1,
        }
    }

    #[wasm_bindgen(getter)]
    pub fn cols(&self) -> usize {
        match self.inner.shape {
            wgtrain::data::SampleShape::Image { w, .. } => w,
            wgtrain::data::SampleShape::Flat(n) => n,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChunkReport {
    epoch: usize,
    step: usize,
    total_steps: usize,
    loss: f32,
    accuracy: f32,
    images_per_second: f64,
    epoch_end: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_accuracy: Option<f32>,
    done: bool,
}

#[derive(Serialize)]
struct Evaluation {
    loss: f32,
    accuracy: f32,
    n: u32,
}

/// A network being trained on one device (WebGPU or the CPU twins), with its data resident.
#[wasm_bindgen]
pub struct Trainer {
    engine: Engine,
    cfg: TrainConfig,
    test_len: usize,
    /// Where training stands (the CLI's epoch loop keeps the same books).
    progress: train::Progress,
    device: String,
    /// The matmul variant chosen for each product (`M×N×K: tile`; empty on the CPU).
    /// Each product's autotune key and its `MxNxK: tile` line.
    tuning: Vec<(wgtrain::gpu::autotune::MatmulAutotuneKey, String)>,
}

#[wasm_bindgen]
impl Trainer {
    /// Build the network (fresh, or from `model`, a safetensors file's bytes, named
    /// `modelName` in errors), upload the data and prepare the programs on the device
    /// `options.device` asks for.
    pub async fn create(
        #[wasm_bindgen(unchecked_param_type = "TrainOptions")] options: JsValue,
        train: &Dataset,
        test: &Dataset,
        model: Option<Vec<u8>>,
        model_name: Option<String>,
    ) -> Result<Trainer, JsValue> {
        let o: TrainOptions = if options.is_undefined() || options.is_null() {
            TrainOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| js_err(format!("invalid training options: {e}")))?
        };
        let ctx = match o.device.as_deref().unwrap_or("auto") {
            "cpu" => None,
            "gpu" => Some(open_webgpu().await.map_err(js_err)?),
            "auto" => match open_webgpu().await {
                Ok(ctx) => Some(ctx),
                Err(why) => {
                    log::warn!("{why}; training on the CPU twins (WebAssembly) instead");
                    None
                }
            },
            other => {
                return Err(option_err(
                    "device",
                    &format!(
                        "invalid training options: device {other:?} is not one of \"auto\", \"gpu\", \"cpu\""
                    ),
                ))
            }
        };
        let name = model_name.unwrap_or_else(|| "the model file".into());
        // The device first: what must fit in WebAssembly memory depends on it.
        let on_cpu = ctx.is_none();
        let (cfg, model) =
            resolve(&o, model.as_deref().map(|b| (b, name.as_str())), on_cpu).map_err(js_err)?;
        // Both sets stay the page's (a by-value `Dataset` would be moved out of JavaScript).
        let test = Some(&test.inner);
        train::check_data(&cfg.arch, &train.inner, "training").map_err(js_err)?;
        if let Some(t) = test {
            train::check_data(&cfg.arch, t, "test").map_err(js_err)?;
        }
        let mut tuning = Vec::new();
        let be: Box<dyn Backend> = match ctx {
            None => Box::new(ReferenceBackend::new()),
            Some(ctx) => {
                // The page cannot wait inside `prepare`: its products start first, each on
                // the adapter's default tile once that passes its check against the CPU twin
                // (or on a choice cached earlier); the other candidates are tried between
                // chunks of training (`train`), as natively.
                let specs = wgtrain::verify::coverage::program_products(&cfg).map_err(js_err)?;
                let mut be = wgtrain::backend::gpu::GpuBackend::new(ctx);
                if o.autotune != Some(false) {
                    be.start_in_background_async(&specs).await;
                }
                let started = be.tuning_report();
                for s in &specs {
                    let key = wgtrain::gpu::autotune::key(be.ctx(), s);
                    let line = match started.products.iter().find(|p| p.key == key) {
                        Some(p) => format!("{}x{}x{}: {} (tuning)", s.m, s.n, s.k, p.started),
                        // Cached and checked, or the unchecked default with autotune off.
                        None => format!(
                            "{}x{}x{}: {}",
                            s.m,
                            s.n,
                            s.k,
                            if o.autotune == Some(false) {
                                MatmulTile::default_for(be.ctx())
                            } else {
                                wgtrain::gpu::autotune::tile_for(be.ctx(), s)
                            }
                        ),
                    };
                    tuning.push((key, line));
                }
                Box::new(be)
            }
        };
        let engine = Engine::new(be, &cfg, &model, None, &train.inner, test).map_err(js_err)?;
        let device = match engine.kind() {
            wgtrain::backend::EngineKind::Gpu => {
                let (name, _) = engine.adapter();
                format!("WebGPU: {name}")
            }
            _ => "CPU (WebAssembly twins)".into(),
        };
        Ok(Trainer {
            engine,
            test_len: test.map_or(0, |t| t.n),
            progress: train::Progress::new(&cfg, train.inner.n, Position::default()),
            cfg,
            device,
            tuning,
        })
    }

    /// The device training runs on, in words.
    #[wasm_bindgen(getter)]
    pub fn device(&self) -> String {
        self.device.clone()
    }

    /// The matmul variant each of the network's products runs, as `MxNxK: tile`; a product
    /// still being tuned in the background reads `MxNxK: tile (tuning)` until its search ends
    /// (empty on the CPU).
    #[wasm_bindgen(getter)]
    pub fn tuning(&self) -> Vec<String> {
        self.tuning.iter().map(|t| t.1.clone()).collect()
    }

    /// The architecture as an `--arch` string.
    #[wasm_bindgen(getter)]
    pub fn arch(&self) -> String {
        self.cfg.arch.to_string()
    }

    /// The resolved settings (every [`TrainOptions`] field).
    #[wasm_bindgen(getter, unchecked_return_type = "TrainOptions")]
    pub fn config(&self) -> Result<JsValue, JsValue> {
        to_js(&TrainOptions::from(&self.cfg))
    }

    #[wasm_bindgen(getter, js_name = totalSteps)]
    pub fn total_steps(&self) -> usize {
        self.progress.steps().1
    }

    /// Steps done so far.
    #[wasm_bindgen(getter)]
    pub fn step(&self) -> usize {
        self.progress.steps().0
    }

    /// Epochs completed.
    #[wasm_bindgen(getter)]
    pub fn epoch(&self) -> usize {
        self.progress.position().epoch
    }

    #[wasm_bindgen(getter)]
    pub fn done(&self) -> bool {
        self.progress.finished()
    }

    /// Train to the end of the run in chunks of `chunk_steps` steps (never across an epoch's
    /// end), calling `on_chunk(report)` after each and letting the page draw; `on_chunk`
    /// returning `false` pauses there (call `train` again to go on). Resolves to the last
    /// report. A loss that turns NaN or infinite ends with an error naming the epoch.
    #[wasm_bindgen(unchecked_return_type = "ChunkReport | undefined")]
    pub async fn train(
        &mut self,
        chunk_steps: usize,
        #[wasm_bindgen(unchecked_param_type = "(report: ChunkReport) => boolean | void")]
        on_chunk: js_sys::Function,
    ) -> Result<JsValue, JsValue> {
        if chunk_steps == 0 {
            return Err(option_err(
                "chunkSteps",
                &format!("invalid argument {}: must be at least 1", chunk_words()),
            ));
        }
        let mut last = JsValue::UNDEFINED;
        while !self.progress.finished() {
            let t = web_time::Instant::now();
            // The library's chunk: the epoch's order, never past the epoch's end or max_steps.
            let c = self
                .progress
                .advance(&mut self.engine, chunk_steps)
                .map_err(js_err)?;
            // Reading the metrics waits for the chunk: the time is the device's.
            let m = self
                .engine
                .take_train_metrics_async()
                .await
                .map_err(js_err)?;
            let seconds = t.elapsed().as_secs_f64();
            let (loss, accuracy) =
                train::finite_summary(&m, c.epoch + 1, self.cfg.lr).map_err(js_err)?;
            let (mut test_loss, mut test_accuracy) = (None, None);
            if c.epoch_end && self.test_len > 0 {
                let e = self
                    .engine
                    .evaluate_async(Which::Test)
                    .await
                    .map_err(js_err)?;
                let (l, a) = train::summarize(&e);
                (test_loss, test_accuracy) = (Some(l), Some(a));
            }
            // Background tuning may take as long as training has so far (see the engine).
            self.engine
                .tune_between_chunks_async(std::time::Duration::from_secs_f64(seconds))
                .await
                .map_err(js_err)?;
            if let Some(r) = self.engine.tuning_report() {
                for (key, line) in &mut self.tuning {
                    let chosen = r.products.iter().find(|p| p.key == *key);
                    if let Some(tile) = chosen.and_then(|p| p.chosen.as_deref()) {
                        let shape = line.split(':').next().unwrap_or_default().to_string();
                        *line = format!("{shape}: {tile}");
                    }
                }
            }
            let (step, total) = self.progress.steps();
            last = to_js(&ChunkReport {
                epoch: c.epoch + 1,
                step,
                total_steps: total,
                loss,
                accuracy,
                images_per_second: m.seen as f64 / seconds.max(1e-9),
                epoch_end: c.epoch_end,
                test_loss,
                test_accuracy,
                done: step >= total,
            })?;
            let go_on = on_chunk
                .call1(&JsValue::NULL, &last)
                .map_err(|e| js_err(format!("the chunk callback threw: {e:?}")))?;
            if go_on == JsValue::FALSE {
                break;
            }
            yield_now().await;
        }
        Ok(last)
    }

    /// Mean loss and accuracy over the whole test set (`"test"`, the default) or training
    /// set (`"train"`).
    #[wasm_bindgen(unchecked_return_type = "Evaluation")]
    pub async fn evaluate(&mut self, which: Option<String>) -> Result<JsValue, JsValue> {
        let which = match which.as_deref().unwrap_or("test") {
            "test" if self.test_len > 0 => Which::Test,
            "test" => return Err(js_err("no test set was given to this trainer")),
            "train" => Which::Train,
            other => {
                return Err(js_err(format!(
                    "evaluate: {other:?} is not \"test\" or \"train\""
                )))
            }
        };
        let m = self.engine.evaluate_async(which).await.map_err(js_err)?;
        let (loss, accuracy) = train::summarize(&m);
        to_js(&Evaluation {
            loss,
            accuracy,
            n: m.seen,
        })
    }

    /// Class probabilities for one image: `rows·cols` values in [0, 1], row-major, a bright
    /// digit on a dark background as in MNIST.
    pub async fn predict(&mut self, pixels: Vec<f32>) -> Result<Vec<f32>, JsValue> {
        let want = self.cfg.arch.input_len();
        if pixels.len() != want {
            return Err(js_err(format!(
                "predict: the image has {} values but {} takes {want}",
                pixels.len(),
                self.cfg.arch
            )));
        }
        if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
            return Err(js_err(format!(
                "predict: value {i} is {}, not a number",
                pixels[i]
            )));
        }
        // The forward program runs a whole batch; the image is its first row.
        let mut p = self
            .engine
            .probabilities_async(&pixels)
            .await
            .map_err(js_err)?;
        p.truncate(self.cfg.arch.classes());
        Ok(p)
    }

    /// The trained weights as a safetensors file (what `wgtrain train --out` writes and
    /// `wgtrain eval --model` reads). Weights holding NaN or infinity are refused.
    #[wasm_bindgen(js_name = exportModel)]
    pub async fn export_model(&mut self) -> Result<Vec<u8>, JsValue> {
        let model = self.engine.model_async().await.map_err(js_err)?;
        model.check_finite("the trained model").map_err(js_err)?;
        let mut meta = wgtrain::model::io::Metadata::new();
        meta.insert(
            "config".into(),
            serde_json::to_string(&self.cfg).map_err(js_err)?,
        );
        meta.insert("trained_in".into(), "wgtrain-web".into());
        meta.insert("steps".into(), self.progress.steps().0.to_string());
        model
            .to_bytes(Path::new("model.safetensors"), &meta)
            .map_err(js_err)
    }
}

#[derive(Serialize)]
struct VerifyCheck {
    family: &'static str,
    name: String,
    shape: String,
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct VerifyReport {
    device: String,
    seed: u32,
    passed: usize,
    failed: usize,
    checks: Vec<VerifyCheck>,
}

/// Every kernel family (or those in `families`) on `device` (`"gpu"`, the default, or
/// `"cpu"`) against the CPU twins on random inputs from `seed` (printed in the report): the
/// same checks as `wgtrain verify --device ...`, with the smaller shape set.
#[wasm_bindgen(unchecked_return_type = "VerifyReport")]
pub async fn verify(
    device: Option<String>,
    families: Option<Vec<String>>,
    seed: Option<u32>,
) -> Result<JsValue, JsValue> {
    let seed = seed.unwrap_or_else(|| wgtrain::verify::run_seed() as u32);
    let mut be: Box<dyn Backend> = match device.as_deref().unwrap_or("gpu") {
        "gpu" => Box::new(wgtrain::backend::gpu::GpuBackend::new(
            open_webgpu().await.map_err(js_err)?,
        )),
        "cpu" => Box::new(ReferenceBackend::new()),
        other => {
            return Err(js_err(format!(
                "verify: device {other:?} is not \"gpu\" or \"cpu\""
            )))
        }
    };
    let all = wgtrain::verify::Family::ALL;
    let families: Vec<wgtrain::verify::Family> = match &families {
        None => all.to_vec(),
        Some(f) => f
            .iter()
            .map(|name| {
                all.into_iter().find(|a| a.name() == name).ok_or_else(|| {
                    js_err(format!(
                        "verify: unknown op family {name:?}; expected one of {:?}",
                        all.map(|a| a.name())
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut checks = Vec::new();
    for fam in families {
        let got =
            wgtrain::verify::run_backend_family_async(be.as_mut(), fam, u64::from(seed), false)
                .await
                .map_err(js_err)?;
        checks.extend(got.into_iter().map(|c| VerifyCheck {
            family: fam.name(),
            ok: c.pass(),
            detail: format!(
                "max |Δ| {:.3e}, error/tolerance {:.3}, {} of {} out of tolerance",
                c.max_abs, c.worst, c.bad, c.elements
            ),
            name: c.name(),
            shape: c.shape,
        }));
        yield_now().await;
    }
    let passed = checks.iter().filter(|c| c.ok).count();
    to_js(&VerifyReport {
        device: be.describe(),
        seed,
        passed,
        failed: checks.len() - passed,
        checks,
    })
}
