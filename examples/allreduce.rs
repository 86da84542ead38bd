//! The all-reduce of data-parallel training alone, at the gradient sizes of the presets:
//! `mpirun -np 2 target/release/examples/allreduce` (build with
//! `cargo build --release --features distributed --example allreduce`). Rank 0 prints one
//! line per size: the median, minimum and maximum time of `Collective::sum_f32` over 200
//! calls (after 20 warm-up calls), and the bus bandwidth 2·(N−1)/N·bytes/time that the usual
//! ring all-reduce model predicts per link.

use std::time::Instant;
use wgtrain::dist::{mpi::Mpi, Collective};
use wgtrain::model::Arch;

fn main() -> wgtrain::Result<()> {
    let mpi = Mpi::init(false)?;
    let n = mpi.size();
    let mut sizes: Vec<(String, usize)> = vec![("1k floats".into(), 1_000)];
    for preset in ["seed-small", "seed-large", "lenet5", "cnn"] {
        let arch = Arch::parse(Arch::preset(preset).expect("preset"))?;
        let params: usize = arch
            .param_shapes()
            .iter()
            .map(|(w, b)| w.iter().product::<usize>() + b)
            .sum();
        sizes.push((preset.into(), params));
    }
    if mpi.rank() == 0 {
        println!(
            "{n} ranks on {} host(s) seen from rank 0 ({} local)",
            if mpi.local_size() == n {
                "1"
            } else {
                "several"
            },
            mpi.local_size()
        );
        println!("size            floats     median ms   min ms   max ms   bus GB/s");
    }
    for (name, len) in sizes {
        let mut data = vec![1.0f32; len];
        let mut times = Vec::new();
        for i in 0..220 {
            let t = Instant::now();
            mpi.sum_f32(&mut data)?;
            if i >= 20 {
                times.push(t.elapsed().as_secs_f64());
            }
            data.fill(1.0);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let bus = 2.0 * (n - 1) as f64 / n as f64 * (4 * len) as f64 / med / 1e9;
        if mpi.rank() == 0 {
            println!(
                "{name:<12} {len:>10} {:>12.3} {:>8.3} {:>8.3} {bus:>10.2}",
                1e3 * med,
                1e3 * times[0],
                1e3 * times[times.len() - 1]
            );
        }
    }
    Ok(())
}
