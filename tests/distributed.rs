//! `mpirun -np 2 wgtrain train --distributed` (cargo feature `distributed`, Open MPI): two
//! ranks train as one process does, within float rounding, on the CPU engine and with one rank
//! on a GPU adapter (lavapipe here) beside one on the CPU engine; a rank killed mid-run ends the
//! job with a message naming it, leaves a valid checkpoint, and resuming gives the weights of
//! an uninterrupted run; ranks that disagree are refused before training; a rank that fails
//! alone ends every rank instead of leaving them waiting.
//!
//! Run with `cargo test --features distributed --test distributed` (`.ci/run` does). Both ranks
//! share this machine's cores (`--oversubscribe`), one CPU thread each.
#![cfg(feature = "distributed")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use wgtrain::model::io::Checkpoint;
use wgtrain::model::Model;

/// How long a slow machine may take for any one job.
const PATIENCE: Duration = Duration::from_secs(300);

/// Epochs for a run that must not finish before the test kills a rank: 2·10⁶ steps.
const ENDLESS: &str = "100000";

/// The 2,000 sample images in minibatches of 100.
const STEPS_PER_EPOCH: usize = 20;

/// See `tests/data_parallel.rs`: 20 SGD steps of 784-32-16-10 differ from one process only in
/// the order of summation, 3.9e-7 at most by the rounding argument there.
const SGD_20_STEPS_TOL: f32 = 4e-7;

/// `wgtrain train` arguments shared by every rank and by the one-process reference.
fn train_args(arch: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--arch",
        arch,
        "--data-dir",
        "assets/mnist-sample",
        "--seed",
        "7",
        "--quiet",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(out.to_str().unwrap().into());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `mpirun` running one rank per entry of `ranks` (extra arguments of that rank, e.g. its
/// device), each `wgtrain <args> --distributed <its extra>`, with the tests' environment.
fn mpirun(args: &[String], ranks: &[&[&str]]) -> Command {
    let probe = common::wgtrain_command();
    let mut c = Command::new("mpirun");
    // Root in containers; more ranks than cores; no pinning (the CPU engine has threads).
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "--bind-to", "none"]);
    for (k, v) in probe.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    for (i, extra) in ranks.iter().enumerate() {
        if i > 0 {
            c.arg(":");
        }
        c.args(["-np", "1", probe.get_program().to_str().unwrap()])
            .args(args)
            .arg("--distributed")
            .args(*extra);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Run to the end, failing the test if it takes longer than [`PATIENCE`] (a hung rank).
fn run(mut c: Command) -> Output {
    let child = c.spawn().expect("mpirun (install openmpi-bin)");
    finish(child)
}

fn finish(mut child: Child) -> Output {
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("the job did not end within {PATIENCE:?}: a rank hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn one_process(arch: &str, out: &Path, extra: &[&str]) -> Model {
    let o = common::wgtrain_command()
        .args(train_args(arch, out, extra))
        .args(["--device", "cpu", "--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    Model::load(out).unwrap().0
}

const CPU: &[&str] = &["--device", "cpu", "--threads", "1"];

/// One epoch of 784-32-16-10 on the sample by `mpirun` with `ranks` and by one process: both
/// runs' weights must be within [`SGD_20_STEPS_TOL`]. Returns everything the job printed and
/// the path of its model.
fn as_one_process(label: &str, ranks: &[&[&str]], dir: &Path) -> (String, PathBuf) {
    let (one, two) = (dir.join("one.safetensors"), dir.join("two.safetensors"));
    let reference = one_process("784-32-16-10", &one, &["--epochs", "1"]);
    let o = run(mpirun(
        &train_args("784-32-16-10", &two, &["--epochs", "1"]),
        ranks,
    ));
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    let d = common::max_diff(&reference, &Model::load(&two).unwrap().0);
    eprintln!("mpirun, {label}: max |w_2 − w_1| = {d:.3e}");
    assert!(d < SGD_20_STEPS_TOL, "weights differ by {d}\n{all}");
    (all, two)
}

#[test]
fn two_cpu_ranks_under_mpirun_train_as_one_process_within_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let (all, two) = as_one_process("2 cpu ranks", &[CPU, CPU], dir.path());
    // Rank 0 alone reports and writes.
    assert_eq!(all.matches("final:").count(), 1, "{all}");
    assert!(all.contains("(over 2 ranks)"), "{all}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(two.with_extension("json")).unwrap()).unwrap();
    assert_eq!(summary["ranks"], 2);
    assert_eq!(summary["communication"]["steps"], STEPS_PER_EPOCH);
}

#[test]
fn a_gpu_rank_and_a_cpu_rank_under_mpirun_train_as_one_process_within_rounding() {
    // The two "vendors" here: lavapipe (Vulkan) and the CPU engine.
    let vulkan = common::contexts("mpirun_mixed")
        .iter()
        .any(|c| c.info.backend == wgpu::Backend::Vulkan);
    if !vulkan {
        eprintln!("SKIPPED mpirun_mixed: no Vulkan adapter");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gpu: &[&str] = &["--device", "gpu", "--backend", "vulkan"];
    let (all, _) = as_one_process("lavapipe + cpu", &[gpu, CPU], dir.path());
    assert!(
        all.contains("rank 0 of 2: ") && all.contains("Vulkan"),
        "{all}"
    );
    assert!(all.contains("rank 1 of 2: cpu"), "{all}");
}

#[test]
fn overlapped_sums_under_mpirun_give_the_same_bits() {
    // Per-layer all-reduces on a communication thread (a duplicated communicator under
    // MPI_THREAD_MULTIPLE) add the same two numbers per element as one all-reduce afterwards.
    let dir = tempfile::tempdir().unwrap();
    let (plain, over) = (
        dir.path().join("p.safetensors"),
        dir.path().join("o.safetensors"),
    );
    for (out, extra) in [(&plain, &[][..]), (&over, &["--overlap"][..])] {
        let mut args = vec!["--epochs", "1"];
        args.extend(extra);
        let o = run(mpirun(&train_args("784-64-32-10", out, &args), &[CPU, CPU]));
        assert!(o.status.success(), "{}", text(&o));
        assert!(!text(&o).contains("not available"), "{}", text(&o));
    }
    assert_eq!(
        Model::load(&plain).unwrap().0,
        Model::load(&over).unwrap().0
    );
}

/// The pid of rank `rank` of the job whose processes carry `WGTRAIN_TEST_JOB=tag`.
fn rank_pid(tag: &str, rank: usize) -> Option<u32> {
    let want = [
        format!("WGTRAIN_TEST_JOB={tag}"),
        format!("OMPI_COMM_WORLD_RANK={rank}"),
    ];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        want.iter()
            .all(|w| vars.contains(&w.as_bytes()))
            .then_some(pid)
    })
}

fn ckpt(out: &Path) -> PathBuf {
    out.with_file_name("m.ckpt.safetensors")
}

#[test]
fn killing_a_rank_ends_the_job_naming_it_and_resuming_gives_the_uninterrupted_weights() {
    let arch = "784-256-10";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let tag = format!("{}-{:?}", std::process::id(), Instant::now());
    let mut c = mpirun(&train_args(arch, &out, &["--epochs", ENDLESS]), &[CPU, CPU]);
    c.env("WGTRAIN_TEST_JOB", &tag);
    let mut child = c.spawn().unwrap();
    // Training is under way once rank 0 has written its first checkpoint (epoch 1).
    let t = Instant::now();
    while !ckpt(&out).exists() {
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        assert!(t.elapsed() < PATIENCE, "no checkpoint after {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rank_pid(&tag, 1).expect("rank 1's process");
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = finish(child);
    let all = text(&o);
    assert!(!o.status.success(), "the job went on without rank 1\n{all}");
    assert!(
        all.contains("rank 1") && all.contains("signal 9"),
        "mpirun's message names the killed rank\n{all}"
    );
    assert!(!out.exists(), "no final model from a killed job");
    let ck = Checkpoint::load(ckpt(&out)).expect("the checkpoint is intact");
    let at = &ck.run["position"];
    let done = at["epoch"].as_u64().unwrap() as usize * STEPS_PER_EPOCH
        + at["step"].as_u64().unwrap() as usize;
    let total = ENDLESS.parse::<usize>().unwrap() * STEPS_PER_EPOCH;
    eprintln!("rank 1 killed; checkpoint at {at} ({done} of {total} steps)");
    assert!((STEPS_PER_EPOCH..total).contains(&done));
    // Resume (two ranks again) and stop 1.5 epochs later; against a job that never stopped.
    let stop = (done + STEPS_PER_EPOCH * 3 / 2).to_string();
    let ck_path = ckpt(&out);
    let o = run(mpirun(
        &train_args(
            arch,
            &out,
            &["--resume", ck_path.to_str().unwrap(), "--max-steps", &stop],
        ),
        &[CPU, CPU],
    ));
    assert!(o.status.success(), "{}", text(&o));
    let resumed = Model::load(&out).unwrap().0;
    let reference_out = dir.path().join("ref").join("m.safetensors");
    std::fs::create_dir_all(reference_out.parent().unwrap()).unwrap();
    let o = run(mpirun(
        &train_args(
            arch,
            &reference_out,
            &["--epochs", ENDLESS, "--max-steps", &stop],
        ),
        &[CPU, CPU],
    ));
    assert!(o.status.success(), "{}", text(&o));
    let reference = Model::load(&reference_out).unwrap().0;
    // The same ranks on the same engines in the same order of operations: bit for bit.
    assert_eq!(
        resumed, reference,
        "resumed weights differ from the uninterrupted job's"
    );
}

#[test]
fn ranks_given_different_settings_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let o = run(mpirun(
        &train_args("784-32-10", &out, &["--epochs", "1"]),
        &[CPU, &["--device", "cpu", "--threads", "1", "--lr", "0.1"]],
    ));
    let all = text(&o);
    assert!(!o.status.success(), "{all}");
    let line = "error: distributed training: rank 1 differs from rank 0 in its hyperparameters: lr 0.1 on rank 1, 0.05 on rank 0";
    assert_eq!(all.matches(line).count(), 1, "said once, by rank 0\n{all}");
    assert!(!all.contains("epoch "), "no training happened\n{all}");
    assert!(!out.exists());
}

#[test]
fn a_rank_that_fails_alone_ends_every_rank_with_its_rank_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    // Rank 1 asks for an adapter that does not exist; rank 0 goes on into training and
    // would wait for rank 1's gradients forever.
    let o = run(mpirun(
        &train_args("784-32-10", &out, &["--epochs", "1"]),
        &[CPU, &["--device", "gpu", "--adapter", "no-such-adapter"]],
    ));
    let all = text(&o);
    assert!(!o.status.success(), "{all}");
    assert!(
        all.contains("error: rank 1 of 2 on ") && all.contains("no-such-adapter"),
        "{all}"
    );
    assert!(all.contains("ending every rank"), "{all}");
    assert!(!out.exists());
}
