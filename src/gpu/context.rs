//! All wgpu setup: adapter discovery and choice, device creation with the limits the work
//! needs, a cache of compute pipelines, buffers, launches and readback, and the translation of
//! wgpu errors into [`Error`]s that name the kernel.

use crate::error::LimitUse;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// How to pick an adapter. Empty fields fall back to `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`, then
/// to the best device found (a real GPU before a CPU adapter).
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// `vulkan`, `metal`, `dx12`, `gl`, or a comma list; `None` = all backends.
    pub backend: Option<String>,
    /// An index into [`list_adapters`] or a case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
}

/// Parse a backend list such as `vulkan` or `vulkan,gl`.
pub fn parse_backends(s: &str) -> Result<wgpu::Backends> {
    let mut out = wgpu::Backends::empty();
    for part in s.split(',').map(|p| p.trim().to_ascii_lowercase()) {
        out |= match part.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "all" => wgpu::Backends::all(),
            _ => return Err(Error::UnknownBackend(part)),
        };
    }
    Ok(out)
}

#[cfg(not(target_arch = "wasm32"))]
fn backends_for(choice: &AdapterChoice) -> Result<wgpu::Backends> {
    match &choice.backend {
        Some(b) => parse_backends(b),
        None => Ok(wgpu::Backends::all().with_env()),
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter on the chosen backends, in a stable order (best first).
#[cfg(not(target_arch = "wasm32"))]
pub fn list_adapters(choice: &AdapterChoice) -> Result<Vec<wgpu::Adapter>> {
    let backends = backends_for(choice)?;
    let mut adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
    adapters.sort_by_key(|a| rank(&a.get_info()));
    Ok(adapters)
}

/// Every adapter on the chosen backends (best first) as `wgtrain devices --json` lists it:
/// index, name, backend, device type, driver, the limits that bound what fits, and features.
#[cfg(not(target_arch = "wasm32"))]
pub fn adapter_reports(choice: &AdapterChoice) -> Result<Vec<serde_json::Value>> {
    Ok(list_adapters(choice)?
        .iter()
        .enumerate()
        .map(|(i, ad)| {
            let info = ad.get_info();
            let l = ad.limits();
            let f = ad.features();
            serde_json::json!({
                "index": i,
                "name": info.name,
                "backend": format!("{:?}", info.backend),
                "device_type": format!("{:?}", info.device_type),
                "driver": info.driver,
                "driver_info": info.driver_info,
                "limits": {
                    "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
                    "max_buffer_size": l.max_buffer_size,
                    "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
                    "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
                    "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
                    "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
                },
                "features": {
                    "timestamp_query": f.contains(wgpu::Features::TIMESTAMP_QUERY),
                    "subgroups": f.contains(wgpu::Features::SUBGROUP),
                    "shader_f16": f.contains(wgpu::Features::SHADER_F16),
                },
            })
        })
        .collect())
}

/// Lower is better: discrete GPUs first, CPU adapters last; native APIs before GL.
#[cfg(not(target_arch = "wasm32"))]
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (ty, api)
}

#[cfg(not(target_arch = "wasm32"))]
/// The index (into [`list_adapters`]) of the `n`-th hardware GPU of this host, wrapping
/// around: a data-parallel rank's default adapter by its local rank. The GPUs are those the
/// best backend lists (each physical GPU once, identical ones included; the same GPU seen again
/// through GL is not counted). `None` when the host has no hardware GPU (software adapters are
/// not spread over).
#[cfg(not(target_arch = "wasm32"))]
pub fn nth_hardware_adapter(choice: &AdapterChoice, n: usize) -> Result<Option<usize>> {
    let adapters = list_adapters(choice)?;
    let hardware = |a: &wgpu::Adapter| a.get_info().device_type != wgpu::DeviceType::Cpu;
    let Some(best) = adapters
        .iter()
        .find(|a| hardware(a))
        .map(|a| a.get_info().backend)
    else {
        return Ok(None);
    };
    let gpus: Vec<usize> = adapters
        .iter()
        .enumerate()
        .filter(|(_, a)| hardware(a) && a.get_info().backend == best)
        .map(|(k, _)| k)
        .collect();
    Ok(Some(gpus[n % gpus.len()]))
}

/// One line naming an adapter: `llvmpipe (LLVM 15.0.6, 256 bits) [Vulkan, Cpu]`.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} [{:?}, {:?}]", info.name, info.backend, info.device_type)
}

/// Pick one adapter according to `choice` (see [`AdapterChoice`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn choose_adapter(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    let adapters = list_adapters(choice)?;
    if adapters.is_empty() {
        let b = choice
            .backend
            .clone()
            .or_else(|| std::env::var("WGPU_BACKEND").ok())
            .unwrap_or_else(|| "any backend".into());
        return Err(Error::NoAdapter { backends: b });
    }
    let wanted = choice
        .adapter
        .clone()
        .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
    let Some(wanted) = wanted else {
        return Ok(adapters.into_iter().next().unwrap());
    };
    let names: Vec<String> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {}", describe(&a.get_info())))
        .collect();
    if let Ok(i) = wanted.trim().parse::<usize>() {
        return adapters
            .into_iter()
            .nth(i)
            .ok_or_else(|| Error::AdapterNotFound {
                wanted: wanted.clone(),
                available: names.join("; "),
            });
    }
    let w = wanted.to_lowercase();
    adapters
        .into_iter()
        .find(|a| a.get_info().name.to_lowercase().contains(&w))
        .ok_or(Error::AdapterNotFound {
            wanted,
            available: names.join("; "),
        })
}

/// What a run needs from the device; checked against the adapter before anything is created.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// Largest single buffer, bytes.
    pub max_buffer: u64,
    /// Largest storage binding, bytes.
    pub max_binding: u64,
}

impl Default for Needs {
    fn default() -> Self {
        Needs {
            max_buffer: 1 << 20,
            max_binding: 1 << 20,
        }
    }
}

/// The driver's pipeline cache (wgpu's `PipelineCache`) in a file of the crate's cache folder,
/// `pipelines/<key>` with wgpu's [`wgpu::util::pipeline_cache_key`] for the adapter (vendor,
/// device, driver and backend: a file is only ever fed back to the driver it came from). Read
/// when a device opens, so a second process skips compiling the kernels the first compiled;
/// written back (atomically) when the context is dropped, if a pipeline was compiled. Only
/// where the device offers `PIPELINE_CACHE` (Vulkan today); elsewhere drivers keep their own.
struct PipelineCacheFile {
    cache: wgpu::PipelineCache,
    path: std::path::PathBuf,
    /// A pipeline was compiled since the file was read.
    grown: std::sync::atomic::AtomicBool,
}

impl PipelineCacheFile {
    #[cfg(not(target_arch = "wasm32"))]
    fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> Option<Self> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let name = wgpu::util::pipeline_cache_key(info)?;
        let path = crate::util::cache_dir("pipelines").ok()?.join(name);
        let data = std::fs::read(&path).ok();
        // SAFETY: `data` was written by `get_data` of a cache for an adapter with the same
        // `pipeline_cache_key` (wgpu's requirement); `fallback: true` makes the driver start
        // an empty cache when the data is damaged or from another driver version.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("wgtrain pipelines"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        Some(PipelineCacheFile {
            cache,
            path,
            grown: std::sync::atomic::AtomicBool::new(false),
        })
    }

    #[cfg(target_arch = "wasm32")]
    fn open(_: &wgpu::Device, _: &wgpu::AdapterInfo) -> Option<Self> {
        None
    }

    /// Write the cache back if it grew; a failure only costs the next process the compiling.
    fn save(&self) {
        if !self.grown.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Some(data) = self.cache.get_data() else {
            return;
        };
        let write = || -> Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            crate::util::atomic_write(&self.path, &data)
        };
        if let Err(e) = write() {
            log::warn!("pipeline cache not saved: {e}");
        }
    }
}

impl Drop for GpuContext {
    fn drop(&mut self) {
        if let Some(c) = &self.pipeline_cache {
            c.save();
        }
    }
}

/// An open device with its queue, pipeline cache and error plumbing.
pub struct GpuContext {
    /// The adapter the device was opened on.
    pub adapter: wgpu::Adapter,
    /// The logical device: buffers, pipelines, bind groups.
    pub device: wgpu::Device,
    /// The device's one queue: writes and command submissions.
    pub queue: wgpu::Queue,
    /// The adapter's name, backend and kind, for reports.
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (the adapter's own).
    pub limits: wgpu::Limits,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// The driver's compiled pipelines kept between processes, where the device offers
    /// application-managed caches (Vulkan): see [`PipelineCacheFile`].
    pipeline_cache: Option<PipelineCacheFile>,
    /// Errors no scope caught, and the reason the device was lost, if it was.
    uncaptured: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// 16 bytes bound where a kernel variant ignores a binding.
    pub(crate) dummy: wgpu::Buffer,
}

impl GpuContext {
    /// Choose an adapter and open it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(choice: &AdapterChoice) -> Result<Self> {
        Self::from_adapter(choose_adapter(choice)?)
    }

    /// Open a given adapter (see [`GpuContext::open`]), waiting for it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        pollster::block_on(Self::open(adapter))
    }

    /// The adapter the platform offers first (high performance preferred), opened: the entry
    /// point in the browser, where adapters are requested rather than listed.
    pub async fn request(backends: wgpu::Backends) -> Result<Self> {
        let adapter = instance(backends)
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter {
                backends: format!("{backends:?} ({e})"),
            })?;
        Self::open(adapter).await
    }

    /// Open a given adapter, requesting the limits it offers (not wgpu's conservative
    /// defaults), so large layers and datasets fit wherever the hardware allows.
    pub async fn open(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Subgroups let the matmul share operands across lanes (autotune picks such variants
        // only after checking them against the CPU twin).
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::SUBGROUP
            | wgpu::Features::PIPELINE_CACHE;
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgtrain"),
            required_features: adapter.features() & wanted,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            adapter
                .request_device(&desc)
                .await
                .map_err(|e| Error::RequestDevice {
                    adapter: describe(&info),
                    reason: e.to_string(),
                })?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        // wgpu's default handler panics; keep the message and report it from `submit`.
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(one_line(&e.to_string()));
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                *lost_sink.lock().unwrap() = Some(format!("{reason:?}: {msg}"));
            }
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let pipeline_cache = PipelineCacheFile::open(&device, &info);
        Ok(GpuContext {
            adapter,
            device,
            queue,
            info,
            limits,
            pipelines: Mutex::new(HashMap::new()),
            pipeline_cache,
            uncaptured,
            lost,
            dummy,
        })
    }

    /// One line naming the adapter and backend.
    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Fail with a message naming the limit when `needs` exceeds the adapter.
    pub fn check(&self, needs: &Needs, used_by: &LimitUse) -> Result<()> {
        self.check_limit(
            "max_buffer_size",
            self.limits.max_buffer_size,
            needs.max_buffer,
            used_by,
        )?;
        self.check_limit(
            "max_storage_buffer_binding_size",
            self.limits.max_storage_buffer_binding_size,
            needs.max_binding,
            used_by,
        )
    }

    /// Fail with [`Error::LimitExceeded`] when `need > have`.
    pub fn check_limit(
        &self,
        limit: &'static str,
        have: u64,
        need: u64,
        used_by: &LimitUse,
    ) -> Result<()> {
        if need > have {
            return Err(Error::LimitExceeded {
                adapter: self.describe(),
                limit,
                have,
                need,
                short: need - have,
                used_by: used_by.clone(),
            });
        }
        Ok(())
    }

    /// A cached compute pipeline for `entry` in `source`, keyed by `key`.
    pub fn pipeline(
        &self,
        key: &str,
        source: impl FnOnce() -> String,
        entry: &str,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.lock().unwrap().get(key) {
            return Ok(p.clone());
        }
        let (pipeline, error) = self.scoped(wgpu::ErrorFilter::Validation, || {
            let module = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(key),
                    source: wgpu::ShaderSource::Wgsl(source().into()),
                });
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(key),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: self.pipeline_cache.as_ref().map(|c| &c.cache),
                })
        });
        if let Some(e) = error {
            return Err(self.kernel_error(key, &e));
        }
        let p = Arc::new(pipeline);
        if let Some(c) = &self.pipeline_cache {
            c.grown.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.pipelines
            .lock()
            .unwrap()
            .insert(key.to_string(), p.clone());
        Ok(p)
    }

    fn kernel_error(&self, kernel: &str, reason: &str) -> Error {
        let reason = one_line(reason);
        let out_of_memory = reason.to_lowercase().contains("memory");
        Error::Kernel {
            kernel: kernel.to_string(),
            adapter: self.describe(),
            reason,
            out_of_memory,
        }
    }

    /// A storage buffer holding `data` (f32 or u32, any Pod).
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // Zero-sized bindings are invalid; keep at least one word.
        let padded;
        let contents = if bytes.len() < 4 {
            padded = vec![0u8; 4];
            &padded[..]
        } else {
            bytes
        };
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A storage buffer of `len` f32 filled with NaN, so any element a kernel fails to write
    /// shows up in a comparison.
    pub fn poisoned(&self, label: &str, len: usize) -> wgpu::Buffer {
        self.upload(label, &vec![f32::NAN; len.max(1)])
    }

    /// An uninitialised (zeroed) storage buffer of `bytes` bytes.
    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer from 32-bit words (padded to 16 bytes).
    pub fn uniform(&self, label: &str, words: &[u32]) -> wgpu::Buffer {
        let mut w = words.to_vec();
        w.resize(words.len().next_multiple_of(4).max(4), 0);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(&w),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// Build a launch: bind `bindings` (binding number, buffer) to `pipeline`'s group 0.
    pub fn launch(
        &self,
        name: &str,
        pipeline: Arc<wgpu::ComputePipeline>,
        bindings: &[(u32, &wgpu::Buffer)],
        groups: [u32; 3],
    ) -> Result<Launch> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if let Some(&g) = groups.iter().find(|&&g| g > max) {
            return Err(Error::LimitExceeded {
                adapter: self.describe(),
                limit: "max_compute_workgroups_per_dimension",
                have: max as u64,
                need: g as u64,
                short: (g - max) as u64,
                used_by: LimitUse::Kernel(name.to_string()),
            });
        }
        let (bind_group, error) = self.scoped(wgpu::ErrorFilter::Validation, || {
            let layout = pipeline.get_bind_group_layout(0);
            let entries: Vec<wgpu::BindGroupEntry> = bindings
                .iter()
                .map(|(b, buf)| wgpu::BindGroupEntry {
                    binding: *b,
                    resource: buf.as_entire_binding(),
                })
                .collect();
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(name),
                layout: &layout,
                entries: &entries,
            })
        });
        if let Some(e) = error {
            return Err(self.kernel_error(name, &e));
        }
        Ok(Launch {
            name: name.to_string(),
            pipeline,
            bind_group,
            groups,
        })
    }

    /// Record `launches` in order into one compute pass, `repeat` times, and submit once.
    /// WebGPU orders dispatches within a pass and makes each one's writes visible to the next.
    pub fn submit(&self, launches: &[&Launch], repeat: usize) -> Result<wgpu::SubmissionIndex> {
        let record = || {
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                });
                for _ in 0..repeat {
                    for l in launches {
                        pass.set_pipeline(&l.pipeline);
                        pass.set_bind_group(0, &l.bind_group, &[]);
                        pass.dispatch_workgroups(l.groups[0], l.groups[1], l.groups[2]);
                    }
                }
            }
            self.queue.submit([enc.finish()])
        };
        let ((idx, invalid), oom) = self.scoped(wgpu::ErrorFilter::OutOfMemory, || {
            self.scoped(wgpu::ErrorFilter::Validation, record)
        });
        let names = || {
            let mut n: Vec<&str> = launches.iter().map(|l| l.name.as_str()).collect();
            n.dedup();
            n.join(", ")
        };
        if let Some(e) = invalid.or(oom) {
            return Err(self.kernel_error(&names(), &e));
        }
        self.health(&names())?;
        Ok(idx)
    }

    /// `f`'s result and the first error of kind `filter` it raised, as text. Native: an error
    /// scope, settled at once (wgpu validates on the calling thread). In the browser errors
    /// arrive asynchronously, so there is no scope to wait for: they reach the
    /// uncaptured-error handler and the next [`GpuContext::health`] check reports them.
    fn scoped<T>(&self, filter: wgpu::ErrorFilter, f: impl FnOnce() -> T) -> (T, Option<String>) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let scope = self.device.push_error_scope(filter);
            let t = f();
            let e = pollster::block_on(scope.pop()).map(|e| e.to_string());
            (t, e)
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = filter;
            (f(), None)
        }
    }

    /// Report a lost device or an uncaught error.
    pub fn health(&self, kernel: &str) -> Result<()> {
        if let Some(reason) = self.lost.lock().unwrap().clone() {
            return Err(Error::DeviceLost {
                adapter: self.describe(),
                reason,
            });
        }
        if let Some(e) = self.uncaptured.lock().unwrap().pop() {
            return Err(self.kernel_error(kernel, &e));
        }
        Ok(())
    }

    /// Block until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback {
                what: "queue".into(),
                reason: e.to_string(),
            })?;
        self.health("wait")
    }

    /// [`GpuContext::wait`] without blocking the browser: resolves when the queue's work is
    /// done (natively, after polling the device to idle).
    pub async fn wait_async(&self) -> Result<()> {
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.wait()?;
        if rx.receive().await.is_none() {
            return Err(Error::Readback {
                what: "queue".into(),
                reason: "the work-done callback never ran".into(),
            });
        }
        self.health("wait")
    }

    /// Copy `len` elements of `buffer` back to the host.
    pub fn read<T: bytemuck::Pod>(
        &self,
        what: &str,
        buffer: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<T>> {
        crate::util::wait_for(what, self.read_async(what, buffer, len))
    }

    /// Copy `len` elements of `buffer` back to the host, without blocking in the browser.
    pub async fn read_async<T: bytemuck::Pod>(
        &self,
        what: &str,
        buffer: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<T>> {
        let bytes = len * std::mem::size_of::<T>();
        let mut out = vec![T::zeroed(); len];
        self.read_bytes_into_async(what, &[(buffer, bytes)], bytemuck::cast_slice_mut(&mut out))
            .await?;
        Ok(out)
    }

    /// [`GpuContext::read_bytes_into_async`], waiting for it (see [`crate::util::wait_for`]).
    pub fn read_bytes_into(
        &self,
        what: &str,
        parts: &[(&wgpu::Buffer, usize)],
        out: &mut [u8],
    ) -> Result<()> {
        crate::util::wait_for(what, self.read_bytes_into_async(what, parts, out))
    }

    /// The first `bytes` of each buffer, one after another, into `out` (which holds their
    /// sum): one copy into one staging buffer and one wait for them all (data-parallel training
    /// reads every gradient so each step). In the browser the wait yields to the page.
    pub async fn read_bytes_into_async(
        &self,
        what: &str,
        parts: &[(&wgpu::Buffer, usize)],
        out: &mut [u8],
    ) -> Result<()> {
        let padded = |b: usize| (b as u64).next_multiple_of(4);
        let total: u64 = parts.iter().map(|&(_, b)| padded(b)).sum();
        if total == 0 {
            return Ok(());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let mut at = 0;
        for &(buffer, bytes) in parts {
            if bytes > 0 {
                enc.copy_buffer_to_buffer(buffer, 0, &staging, at, padded(bytes));
            }
            at += padded(bytes);
        }
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        let fail = |reason: String| Error::Readback {
            what: what.to_string(),
            reason,
        };
        match rx.receive().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(fail(e.to_string())),
            None => return Err(fail("map callback never ran".into())),
        }
        let view = slice.get_mapped_range().map_err(|e| fail(e.to_string()))?;
        let (mut at, mut to) = (0, 0);
        for &(_, bytes) in parts {
            out[to..to + bytes].copy_from_slice(&view[at..at + bytes]);
            at += padded(bytes) as usize;
            to += bytes;
        }
        drop(view);
        staging.unmap();
        Ok(())
    }
}

/// A prepared dispatch: pipeline, bind group and workgroup counts. Reusable across steps.
pub struct Launch {
    /// The kernel's name: the bind group's label, and what errors about the launch name.
    pub name: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    /// Workgroup counts in x, y, z.
    pub groups: [u32; 3],
}

/// Workgroup counts covering `n` invocations of `wg` threads, folded into a second dimension
/// past the 65535 limit of one (shaders rebuild the index as `x + y·nx·WG`).
pub fn grid_1d(n: usize, wg: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg as usize).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65535);
        [65535, y as u32, 1]
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
