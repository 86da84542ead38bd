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
    world: Comm,
    local_rank: usize,
    local_size: usize,
    host: String,
    /// Whether other threads may call MPI too (`MPI_THREAD_MULTIPLE`), for [`Collective::fork`].
    multiple: bool,
    // Finalises MPI when dropped; declared last so the communicators go first.
    _universe: mpi::environment::Universe,
}

/// A communicator and the send buffer of its sums (kept between steps: no allocation per step).
struct Comm {
    comm: SimpleCommunicator,
    scratch: std::cell::RefCell<Vec<f32>>,
}

/// A duplicate of the world communicator owned by one other thread.
struct Forked(Comm);

// SAFETY: MPI was initialised with MPI_THREAD_MULTIPLE (`fork` checks), under which any thread
// may call MPI; the communicator is a duplicate used only by the thread that owns this value,
// so its collectives never interleave with another thread's on the same communicator.
unsafe impl Send for Forked {}

impl Mpi {
    /// Initialise MPI: funnelled (only this thread calls MPI; the CPU engine's and wgpu's own
    /// threads never do), or with `multiple` `MPI_THREAD_MULTIPLE`, so that a communication
    /// thread may sum gradients while this one computes ([`Collective::fork`]).
    pub fn init(multiple: bool) -> Result<Self> {
        let wanted = if multiple {
            mpi::Threading::Multiple
        } else {
            mpi::Threading::Funneled
        };
        let (universe, level) = mpi::initialize_with_threading(wanted)
            .ok_or_else(|| Error::Collective("MPI was initialised twice".into()))?;
        let world = universe.world();
        let local = world.split_shared(world.rank());
        Ok(Mpi {
            local_rank: local.rank() as usize,
            local_size: local.size() as usize,
            host: mpi::environment::processor_name().unwrap_or_else(|_| "?".into()),
            multiple: level == mpi::Threading::Multiple,
            world: Comm {
                comm: world,
                scratch: Default::default(),
            },
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
        self.world.comm.abort(code)
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank()
    }
    fn size(&self) -> usize {
        self.world.size()
    }
    fn sum_f32(&self, data: &mut [f32]) -> Result<()> {
        self.world.sum_f32(data)
    }
    fn broadcast_f32(&self, data: &mut [f32]) -> Result<()> {
        self.world.broadcast_f32(data)
    }
    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        self.world.sum_f64(data)
    }
    fn exchange(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.world.exchange(mine)
    }
    fn fork(&self) -> Result<Option<Box<dyn Collective + Send>>> {
        if !self.multiple {
            return Ok(None);
        }
        let comm = self.world.comm.duplicate();
        Ok(Some(Box::new(Forked(Comm {
            comm,
            scratch: Default::default(),
        }))))
    }
}

impl Collective for Forked {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn size(&self) -> usize {
        self.0.size()
    }
    fn sum_f32(&self, data: &mut [f32]) -> Result<()> {
        self.0.sum_f32(data)
    }
    fn broadcast_f32(&self, data: &mut [f32]) -> Result<()> {
        self.0.broadcast_f32(data)
    }
    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        self.0.sum_f64(data)
    }
    fn exchange(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.0.exchange(mine)
    }
    fn fork(&self) -> Result<Option<Box<dyn Collective + Send>>> {
        Ok(None)
    }
}

impl Comm {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    fn sum_f32(&self, data: &mut [f32]) -> Result<()> {
        // The send side of the all-reduce, kept between steps (no allocation per step).
        let mut send = self.scratch.borrow_mut();
        send.clear();
        send.extend_from_slice(data);
        self.comm
            .all_reduce_into(&send[..], data, SystemOperation::sum());
        Ok(())
    }

    fn broadcast_f32(&self, data: &mut [f32]) -> Result<()> {
        self.comm.process_at_rank(0).broadcast_into(data);
        Ok(())
    }

    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        let send = data.to_vec();
        self.comm
            .all_reduce_into(&send[..], data, SystemOperation::sum());
        Ok(())
    }

    fn exchange(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let n = self.size();
        let mut lens = vec![0u64; n];
        self.comm
            .all_gather_into(&(mine.len() as u64), &mut lens[..]);
        let width = *lens.iter().max().unwrap_or(&0) as usize;
        if width == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let mut padded = mine.to_vec();
        padded.resize(width, 0);
        let mut all = vec![0u8; width * n];
        self.comm.all_gather_into(&padded[..], &mut all[..]);
        Ok(all
            .chunks(width)
            .zip(&lens)
            .map(|(c, &l)| c[..l as usize].to_vec())
            .collect())
    }
}
