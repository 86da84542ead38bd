//! Ranks as MPI processes (cargo feature `distributed`), through the `mpi` crate (rsmpi): the
//! maintained Rust binding of the MPI standard, so any implementation (Open MPI, MPICH) and any
//! launcher (`mpirun`, a cluster scheduler) works, and the sums run MPI's own tuned
//! all-reduce rather than a protocol of ours.

use super::Collective;
use crate::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

/// `MPI_COMM_WORLD` of a process started by `mpirun`.
pub struct Mpi {
    // Finalises MPI when dropped; declared last so the communicators go first.
    world: SimpleCommunicator,
    local_rank: usize,
    local_size: usize,
    host: String,
    scratch: std::cell::RefCell<Vec<f32>>,
    _universe: mpi::environment::Universe,
}

impl Mpi {
    /// Initialise MPI (funnelled: only the main thread calls it; the CPU engine's and
    /// wgpu's own threads never do).
    pub fn init() -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| Error::Distributed("MPI was initialised twice".into()))?;
        let world = universe.world();
        let local = world.split_shared(world.rank());
        Ok(Mpi {
            local_rank: local.rank() as usize,
            local_size: local.size() as usize,
            host: mpi::environment::processor_name().unwrap_or_else(|_| "?".into()),
            scratch: Default::default(),
            world,
            _universe: universe,
        })
    }

    /// This rank's index among the ranks on its host.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Ranks on this host.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// End the whole job (every rank) with `code`: for an error on one rank, which would
    /// otherwise leave the others waiting in a collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f32(&self, data: &mut [f32]) -> Result<()> {
        // The send side of the all-reduce, kept between steps (no allocation per step).
        let mut send = self.scratch.borrow_mut();
        send.clear();
        send.extend_from_slice(data);
        self.world
            .all_reduce_into(&send[..], data, SystemOperation::sum());
        Ok(())
    }

    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        let send = data.to_vec();
        self.world
            .all_reduce_into(&send[..], data, SystemOperation::sum());
        Ok(())
    }

    fn exchange(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let n = self.size();
        let mut lens = vec![0u64; n];
        self.world
            .all_gather_into(&(mine.len() as u64), &mut lens[..]);
        let width = *lens.iter().max().unwrap_or(&0) as usize;
        if width == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let mut padded = mine.to_vec();
        padded.resize(width, 0);
        let mut all = vec![0u8; width * n];
        self.world.all_gather_into(&padded[..], &mut all[..]);
        Ok(all
            .chunks(width)
            .zip(&lens)
            .map(|(c, &l)| c[..l as usize].to_vec())
            .collect())
    }
}
