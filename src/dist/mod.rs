//! Data-parallel training: N ranks, each holding a full replica of the network, each taking a
//! disjoint 1/N of every global minibatch. After its backward pass a rank's gradients are
//! summed over all ranks ([`Collective::sum_f32`]) and every rank applies the same update, so
//! the replicas stay identical and the result does not depend on N beyond float rounding.
//!
//! The engine ([`crate::train::Engine`]) needs only the [`Collective`] trait, so the
//! training step stays backend- and transport-neutral:
//! * [`Solo`]: one process, no communication (the default).
//! * [`ThreadGroup`]: ranks as threads of one process (tests, and several adapters of one
//!   machine without MPI).
//! * `mpi::Mpi` (cargo feature `distributed`): ranks as MPI processes on one or many hosts,
//!   started by `mpirun`.

use crate::{Error, Result};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

#[cfg(feature = "distributed")]
pub mod mpi;

/// A group of ranks that can sum and exchange data. Every rank must make the same calls in
/// the same order (they are collective).
pub trait Collective {
    /// This rank, 0-based.
    fn rank(&self) -> usize;
    /// How many ranks.
    fn size(&self) -> usize;
    /// Element-wise sum over all ranks, in place. Every rank receives the same bits (the
    /// replicas' identical updates depend on it; the engine compares the replicas once per
    /// epoch).
    fn sum_f32(&self, data: &mut [f32]) -> Result<()>;
    /// Rank 0's `data` on every rank (same length everywhere).
    fn broadcast_f32(&self, data: &mut [f32]) -> Result<()>;
    /// As [`Collective::sum_f32`], in f64 (metrics and flags: exact for counts below 2⁵³).
    fn sum_f64(&self, data: &mut [f64]) -> Result<()>;
    /// Every rank's bytes, in rank order.
    fn exchange(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// A new group of the same ranks for another thread (a collective: every rank calls it),
    /// whose sums run beside this group's own calls; `None` where the transport cannot (MPI
    /// without `MPI_THREAD_MULTIPLE`). Overlapping communication with computation uses it.
    fn fork(&self) -> Result<Option<Box<dyn Collective + Send>>>;
}

/// One process alone: sums and exchanges are the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn exchange(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn fork(&self) -> Result<Option<Box<dyn Collective + Send>>> {
        Ok(Some(Box::new(Solo)))
    }
}

/// Ranks as threads of one process: [`ThreadGroup::new`] makes one handle per rank, to be
/// moved into its thread. Sums add the ranks' contributions in rank order, so every rank gets
/// the same bits. A handle dropped (its thread ended, e.g. with an error) makes every later
/// collective on the others fail instead of waiting forever.
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Round>,
    cv: Condvar,
    /// The handles of a group being forked, until each rank has taken its own.
    forks: Mutex<Vec<Option<ThreadGroup>>>,
}

/// One exchange in progress: the contributions so far, the last completed round's result.
struct Round {
    slots: Vec<Option<Vec<u8>>>,
    arrived: usize,
    generation: u64,
    result: Arc<Vec<Vec<u8>>>,
    /// A rank that left (its handle was dropped).
    left: Option<usize>,
}

impl ThreadGroup {
    /// `size` handles, rank 0 first.
    pub fn new(size: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            state: Mutex::new(Round {
                slots: vec![None; size],
                arrived: 0,
                generation: 0,
                result: Arc::new(Vec::new()),
                left: None,
            }),
            cv: Condvar::new(),
            forks: Mutex::new(Vec::new()),
        });
        (0..size)
            .map(|rank| ThreadGroup {
                rank,
                size,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    fn all(&self, mine: &[u8]) -> Result<Arc<Vec<Vec<u8>>>> {
        let gone = |r: usize| Error::Collective(format!("rank {r} left the group"));
        let mut st = self.shared.state.lock().expect("thread group lock");
        if let Some(r) = st.left {
            return Err(gone(r));
        }
        st.slots[self.rank] = Some(mine.to_vec());
        st.arrived += 1;
        let generation = st.generation;
        if st.arrived == self.size {
            let all: Vec<Vec<u8>> = st.slots.iter_mut().map(|s| s.take().unwrap()).collect();
            st.result = Arc::new(all);
            st.arrived = 0;
            st.generation += 1;
            self.shared.cv.notify_all();
        } else {
            while st.generation == generation && st.left.is_none() {
                st = self.shared.cv.wait(st).expect("thread group lock");
            }
            if st.generation == generation {
                return Err(gone(st.left.unwrap_or(0)));
            }
        }
        // A later round cannot replace the result before this rank has joined it.
        Ok(Arc::clone(&st.result))
    }
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.left.get_or_insert(self.rank);
            self.shared.cv.notify_all();
        }
    }
}

/// Sum the ranks' native-endian arrays of `T` in rank order into `data`.
fn sum_in_rank_order<T: bytemuck::Pod + std::ops::AddAssign>(
    all: &[Vec<u8>],
    data: &mut [T],
) -> Result<()> {
    for (r, bytes) in all.iter().enumerate() {
        let theirs: &[T] = bytemuck::try_cast_slice(bytes)
            .map_err(|e| Error::Collective(format!("rank {r} sent a malformed array: {e}")))?;
        if theirs.len() != data.len() {
            return Err(Error::Collective(format!(
                "rank {r} summed {} values where this rank has {}",
                theirs.len(),
                data.len()
            )));
        }
        if r == 0 {
            data.copy_from_slice(theirs);
        } else {
            for (d, &t) in data.iter_mut().zip(theirs) {
                *d += t;
            }
        }
    }
    Ok(())
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f32(&self, data: &mut [f32]) -> Result<()> {
        let all = self.all(bytemuck::cast_slice(data))?;
        sum_in_rank_order(&all, data)
    }
    fn sum_f64(&self, data: &mut [f64]) -> Result<()> {
        let all = self.all(bytemuck::cast_slice(data))?;
        sum_in_rank_order(&all, data)
    }
    fn broadcast_f32(&self, data: &mut [f32]) -> Result<()> {
        let mine: &[u8] = if self.rank == 0 {
            bytemuck::cast_slice(data)
        } else {
            &[]
        };
        let all = self.all(mine)?;
        if all[0].len() != 4 * data.len() {
            return Err(Error::Collective(format!(
                "rank 0 broadcast {} bytes where rank {} expects {}",
                all[0].len(),
                self.rank,
                4 * data.len()
            )));
        }
        bytemuck::cast_slice_mut(data).copy_from_slice(&all[0]);
        Ok(())
    }
    fn exchange(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self.all(mine)?.as_ref().clone())
    }
    fn fork(&self) -> Result<Option<Box<dyn Collective + Send>>> {
        let mine = {
            let mut forks = self.shared.forks.lock().expect("thread group lock");
            if forks.iter().all(Option::is_none) {
                *forks = ThreadGroup::new(self.size).into_iter().map(Some).collect();
            }
            forks[self.rank]
                .take()
                .expect("one fork per rank at a time")
        };
        // Nobody forks again before every rank has taken its handle of this fork.
        self.all(&[])?;
        Ok(Some(Box::new(mine)))
    }
}

/// This rank's share of every global minibatch: rows `rank·m/N .. (rank+1)·m/N` of each batch
/// of m (so shares differ by at most one row), and of a dataset evaluated in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This process's rank, 0-based.
    pub rank: usize,
    /// N: the number of ranks.
    pub ranks: usize,
}

impl Shard {
    /// The whole of every batch (one process).
    pub const WHOLE: Shard = Shard { rank: 0, ranks: 1 };

    /// The share of `comm`'s rank.
    pub fn of(comm: &dyn Collective) -> Shard {
        Shard {
            rank: comm.rank(),
            ranks: comm.size(),
        }
    }

    /// The rows of a minibatch of `m` that this rank takes.
    pub fn rows(&self, m: usize) -> Range<usize> {
        self.rank * m / self.ranks..(self.rank + 1) * m / self.ranks
    }

    /// This rank's part of an epoch's global `order` with global minibatch `m`: its rows of
    /// each minibatch in step order, so step s starts at entry s·|rows(m)| (only the last,
    /// partial, minibatch can give a rank fewer rows; the gather pads them).
    pub fn local_order(&self, order: &[u32], m: usize) -> Vec<u32> {
        let r = self.rows(m);
        order
            .chunks(m)
            .flat_map(|c| &c[r.start.min(c.len())..r.end.min(c.len())])
            .copied()
            .collect()
    }

    /// `local_order(..).len()` for `n` samples.
    pub fn local_len(&self, n: usize, m: usize) -> usize {
        let r = self.rows(m);
        let full = n / m;
        let rest = n % m;
        full * r.len() + rest.clamp(r.start, r.end) - r.start
    }

    /// The part of a dataset of `n` samples this rank evaluates, in file order: ranks take
    /// consecutive ranges whose lengths are their [`Shard::local_len`]s, so the ranks' parts
    /// cover every sample once.
    pub fn eval_range(&self, n: usize, m: usize) -> Range<usize> {
        let start: usize = (0..self.rank)
            .map(|r| {
                Shard {
                    rank: r,
                    ranks: self.ranks,
                }
                .local_len(n, m)
            })
            .sum();
        start..start + self.local_len(n, m)
    }
}

/// Refuse to start unless every rank describes the run as rank 0 does. `items` are (what,
/// description) pairs such as ("architecture", "784-10") or ("hyperparameters", a JSON
/// object); every rank gets the same verdict, naming the first rank and item that differ
/// (and, for JSON objects, the fields).
pub fn check_agreement(comm: &dyn Collective, items: &[(&str, String)]) -> Result<()> {
    let mine: Vec<&str> = items.iter().map(|(_, d)| d.as_str()).collect();
    let all = comm.exchange(&serde_json::to_vec(&mine).expect("strings serialise"))?;
    let decode = |r: usize| -> Result<Vec<String>> {
        serde_json::from_slice(&all[r])
            .map_err(|e| Error::Distributed(format!("rank {r} sent a malformed description: {e}")))
    };
    let first = decode(0)?;
    for r in 1..all.len() {
        let theirs = decode(r)?;
        for (i, (what, _)) in items.iter().enumerate() {
            let (a, b) = (first.get(i), theirs.get(i));
            if a != b {
                let (a, b) = (
                    a.cloned().unwrap_or_default(),
                    b.cloned().unwrap_or_default(),
                );
                return Err(Error::Distributed(format!(
                    "rank {r} differs from rank 0 in its {what}: {}; every rank must run the \
                     same configuration on the same data",
                    difference(&a, &b, r)
                )));
            }
        }
    }
    Ok(())
}

/// "lr 0.1 on rank 1, 0.05 on rank 0" for JSON objects that differ in fields, else both whole.
fn difference(rank0: &str, theirs: &str, r: usize) -> String {
    use serde_json::{Map, Value};
    let obj = |s: &str| match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    };
    if let (Some(a), Some(b)) = (obj(rank0), obj(theirs)) {
        let fields: Vec<String> = a
            .keys()
            .chain(b.keys().filter(|k| !a.contains_key(*k)))
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| {
                let show = |m: &Map<String, Value>| {
                    m.get(k).map_or("(none)".to_string(), |v| v.to_string())
                };
                format!("{k} {} on rank {r}, {} on rank 0", show(&b), show(&a))
            })
            .collect();
        if !fields.is_empty() {
            return fields.join(", ");
        }
    }
    format!("{theirs:?} on rank {r}, {rank0:?} on rank 0")
}

/// The ranks whose `mine` (e.g. a digest of their replica) differs from rank 0's: a collective,
/// every rank gets the same list.
pub fn differing_ranks(comm: &dyn Collective, mine: &[u8]) -> Result<Vec<usize>> {
    let all = comm.exchange(mine)?;
    Ok((1..all.len()).filter(|&r| all[r] != all[0]).collect())
}

/// SHA-256 of `words`.
pub fn digest(words: &[f32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytemuck::cast_slice::<f32, u8>(words)).into()
}

/// Whether any rank says yes (e.g. "interrupted"): a collective, so the ranks stop together.
pub fn any(comm: &dyn Collective, mine: bool) -> Result<bool> {
    if comm.size() == 1 {
        return Ok(mine);
    }
    let mut v = [mine as u8 as f64];
    comm.sum_f64(&mut v)?;
    Ok(v[0] > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_row_of_every_batch_once_for_uneven_splits() {
        for (n, m, ranks) in [
            (10, 4, 3),
            (7, 7, 2),
            (100, 100, 3),
            (1001, 100, 4),
            (5, 3, 3),
        ] {
            let order: Vec<u32> = (0..n as u32).rev().collect();
            let mut seen = vec![0; n];
            let mut start = 0;
            for rank in 0..ranks {
                let s = Shard { rank, ranks };
                let local = s.local_order(&order, m);
                assert_eq!(local.len(), s.local_len(n, m), "n {n} m {m} rank {rank}");
                let rows = s.rows(m);
                // Step t's rows start at t·|rows| in the local order.
                for (t, chunk) in order.chunks(m).enumerate() {
                    for (i, &o) in chunk.iter().enumerate().filter(|(i, _)| rows.contains(i)) {
                        assert_eq!(local[t * rows.len() + i - rows.start], o);
                    }
                }
                for &o in &local {
                    seen[o as usize] += 1;
                }
                let e = s.eval_range(n, m);
                assert_eq!(e.start, start);
                start = e.end;
            }
            assert!(seen.iter().all(|&c| c == 1), "n {n} m {m} ranks {ranks}");
            assert_eq!(start, n);
        }
    }

    #[test]
    fn thread_group_sums_in_rank_order_and_a_departed_rank_fails_the_rest() {
        let handles = ThreadGroup::new(3);
        let out: Vec<Result<Vec<f32>>> = std::thread::scope(|s| {
            let joins: Vec<_> = handles
                .into_iter()
                .map(|h| {
                    s.spawn(move || {
                        let mut v = vec![h.rank() as f32 + 0.5, 1e8];
                        h.sum_f32(&mut v)?;
                        let mut w = vec![1.0f32];
                        h.sum_f32(&mut w)?;
                        v.push(w[0]);
                        Ok(v)
                    })
                })
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        for v in out {
            assert_eq!(v.unwrap(), vec![4.5, 3e8, 3.0]);
        }
        let mut handles = ThreadGroup::new(2);
        let last = handles.pop().unwrap();
        drop(handles);
        let e = last.sum_f32(&mut [1.0]).unwrap_err().to_string();
        assert!(e.contains("rank 0 left"), "{e}");
    }

    #[test]
    fn disagreement_names_the_rank_and_the_field() {
        let handles = ThreadGroup::new(2);
        let errs: Vec<String> = std::thread::scope(|s| {
            let joins: Vec<_> = handles
                .into_iter()
                .map(|h| {
                    s.spawn(move || {
                        let lr = if h.rank() == 1 { 0.1 } else { 0.05 };
                        check_agreement(
                            &h,
                            &[
                                ("architecture", "784-10".into()),
                                ("hyperparameters", format!(r#"{{"lr":{lr},"batch":100}}"#)),
                            ],
                        )
                        .unwrap_err()
                        .to_string()
                    })
                })
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        for e in errs {
            assert!(
                e.contains("rank 1 differs from rank 0 in its hyperparameters: lr 0.1 on rank 1, 0.05 on rank 0"),
                "{e}"
            );
            assert!(!e.contains('\n'));
        }
        check_agreement(&Solo, &[("architecture", "784-10".into())]).unwrap();
    }
}
