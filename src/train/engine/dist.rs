//! Data-parallel training ([`Engine::with_group`]): each rank's engine holds a full replica
//! and takes its [`Shard`](crate::dist::Shard) of every global minibatch; the step is split
//! into a gradient program (gather, forward, loss, metrics, backward) and an update program,
//! with the gradients summed over the ranks in between, after the whole backward pass or
//! ([`Engine::overlap_communication`]) layer by layer while the backward pass goes on. The
//! loss is scaled by the global batch size, so the summed gradient is the one a single process
//! computes for the whole minibatch. Metrics are summed over the ranks, and the replicas are
//! compared (and made rank 0's again) once per epoch.

use super::Engine;
use crate::backend::ProgramId;
use crate::ops::{BufId, MetricsAcc};
use crate::{Error, Result};

/// Buffers and their lengths in words, read and summed together.
pub(super) type Bucket = Vec<(BufId, usize)>;

/// The pieces of a data-parallel step whose gradients are summed while the next piece runs,
/// and the thread that sums them (over a forked group of the same ranks).
pub(super) struct Overlap {
    /// Gradient program pieces, top layer first, each with the gradient buffers it completes.
    pieces: Vec<(ProgramId, Bucket)>,
    update: ProgramId,
    /// Each piece's host buffer while it is not with the thread (kept: no allocation per step).
    bufs: Vec<Vec<f32>>,
    to: Option<std::sync::mpsc::Sender<(usize, Vec<f32>)>>,
    from: std::sync::mpsc::Receiver<Result<(usize, Vec<f32>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Overlap {
    fn drop(&mut self) {
        // Closing the channel ends the thread; its group is dropped before MPI is finalised.
        self.to = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Seconds spent moving gradients between ranks, summed over `steps` steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CommTime {
    /// Steps the times are summed over.
    pub steps: usize,

    /// Reading the gradients back from the device.
    pub read: f64,
    /// The all-reduce (waiting for the slowest rank included); with the sums overlapped, only
    /// the wait after the backward pass for the sums still under way.
    pub sum: f64,
    /// Writing the sums back to the device.
    pub write: f64,
    /// Epochs after which the replicas differed and rank 0's was copied to every rank.
    pub resyncs: usize,
}

impl Engine {
    /// Data-parallel: sum each layer's gradients on a communication thread while the backward
    /// pass of the layers below it runs (bucketed per layer, as PyTorch's DDP does), instead of
    /// summing all of them after the whole backward pass. A collective: every rank must call
    /// it. `Ok(false)` (and the step unchanged) where some rank cannot: its transport has no
    /// second thread (MPI without `MPI_THREAD_MULTIPLE`), or its engine cannot cut the step
    /// into pieces (the CPU engine fuses a convolution's forward and backward passes).
    pub fn overlap_communication(&mut self) -> Result<bool> {
        let Some((_, update)) = self.split else {
            return Ok(false);
        };
        let fork = self.comm.fork()?;
        let mut pieces = Vec::new();
        let mut ok = fork.is_some();
        for (ops, bucket) in self.grad_pieces() {
            match self.be.prepare(&ops) {
                Ok(p) => pieces.push((p, bucket)),
                Err(e) => {
                    log::info!("overlap: this rank's engine cannot cut the step: {e}");
                    ok = false;
                    break;
                }
            }
        }
        // Start the thread before the vote, so that a rank that cannot start one says so.
        let (to, inbox) = std::sync::mpsc::channel::<(usize, Vec<f32>)>();
        let (outbox, from) = std::sync::mpsc::channel();
        let thread = match fork.filter(|_| ok) {
            Some(comm) => std::thread::Builder::new()
                .name("gradient sums".into())
                .spawn(move || {
                    for (i, mut v) in inbox {
                        let r = comm.sum_f32(&mut v).map(|()| (i, v));
                        if outbox.send(r).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| log::info!("overlap: no communication thread: {e}"))
                .ok(),
            None => None,
        };
        if self.any_rank(thread.is_none())? {
            drop(to);
            if let Some(t) = thread {
                let _ = t.join();
            }
            return Ok(false);
        }
        let thread = thread.expect("voted");
        self.overlap = Some(Overlap {
            bufs: vec![Vec::new(); pieces.len()],
            pieces,
            update,
            to: Some(to),
            from,
            thread: Some(thread),
        });
        Ok(true)
    }

    /// One data-parallel step with [`Engine::overlap_communication`] on.
    fn overlapped_step(&mut self, ov: &mut Overlap) -> Result<()> {
        let mut read = 0.0;
        let mut sent = 0;
        for (i, (prog, bucket)) in ov.pieces.iter().enumerate() {
            self.be.run(*prog, 1)?;
            if bucket.is_empty() {
                continue;
            }
            let t = web_time::Instant::now();
            let mut host = std::mem::take(&mut ov.bufs[i]);
            host.resize(bucket.iter().map(|b| b.1).sum(), 0.0);
            self.be
                .read_into(bucket, bytemuck::cast_slice_mut(&mut host))?;
            read += t.elapsed().as_secs_f64();
            ov.to
                .as_ref()
                .expect("running")
                .send((i, host))
                .map_err(|_| Error::Collective("the communication thread stopped".into()))?;
            sent += 1;
        }
        let t1 = web_time::Instant::now();
        let mut write = 0.0;
        for _ in 0..sent {
            let (i, host) = ov
                .from
                .recv()
                .map_err(|_| Error::Collective("the communication thread stopped".into()))??;
            let t = web_time::Instant::now();
            let mut at = 0;
            for &(b, n) in &ov.pieces[i].1 {
                self.be.write_f32(b, &host[at..at + n])?;
                at += n;
            }
            write += t.elapsed().as_secs_f64();
            ov.bufs[i] = host;
        }
        let wait = t1.elapsed().as_secs_f64() - write;
        self.be.run(ov.update, 1)?;
        let c = &mut self.comm_time;
        c.steps += 1;
        c.read += read;
        c.sum += wait;
        c.write += write;
        Ok(())
    }

    /// `steps` data-parallel steps from the cursor as it stands: per step the gradient
    /// program, the sum over the ranks and the update program (the sums overlapped with the
    /// backward pass when [`Engine::overlap_communication`] is on).
    pub(super) fn run_split_steps(
        &mut self,
        (grad, update): (ProgramId, ProgramId),
        steps: usize,
    ) -> Result<()> {
        if let Some(mut ov) = self.overlap.take() {
            let r = (0..steps).try_for_each(|_| self.overlapped_step(&mut ov));
            // After an error, sums may still be under way: the pieces are not reused.
            if r.is_ok() {
                self.overlap = Some(ov);
            }
            return r;
        }
        for _ in 0..steps {
            self.be.run(grad, 1)?;
            self.sum_gradients()?;
            self.be.run(update, 1)?;
        }
        Ok(())
    }

    /// Replace every gradient buffer by its sum over the ranks: one read of them all, one
    /// all-reduce, one write each.
    fn sum_gradients(&mut self) -> Result<()> {
        let t0 = web_time::Instant::now();
        let mut host = std::mem::take(&mut self.grad_host);
        host.resize(self.grads.iter().map(|g| g.1).sum(), 0);
        self.be.read_into(&self.grads, &mut host)?;
        let t1 = web_time::Instant::now();
        self.comm.sum_f32(bytemuck::cast_slice_mut(&mut host))?;
        let t2 = web_time::Instant::now();
        let mut at = 0;
        for &(b, n) in &self.grads {
            self.be.write(b, &host[at..at + n])?;
            at += n;
        }
        self.grad_host = host;
        let t = &mut self.comm_time;
        t.steps += 1;
        t.read += (t1 - t0).as_secs_f64();
        t.sum += (t2 - t1).as_secs_f64();
        t.write += t2.elapsed().as_secs_f64();
        Ok(())
    }

    /// Time spent moving gradients between the ranks so far (zero in one process).
    pub fn comm_time(&self) -> CommTime {
        self.comm_time
    }

    /// This rank (0 in one process).
    pub fn rank(&self) -> usize {
        self.shard.rank
    }

    /// Ranks training together (1 in one process).
    pub fn ranks(&self) -> usize {
        self.shard.ranks
    }

    /// Whether any rank says yes: a collective every rank must call at the same point.
    pub fn any_rank(&self, mine: bool) -> Result<bool> {
        crate::dist::any(self.comm.as_ref(), mine)
    }

    /// Data-parallel, once per epoch: compare every rank's replica (weights and optimiser
    /// state, by SHA-256) with rank 0's. Ranks of one kind of device stay bit-for-bit equal,
    /// as every rank applies the same update to the same sums; ranks on devices that round the
    /// update differently (one fusing `w − α·v` into an FMA, another not) drift apart by an
    /// ulp here and there. Then rank 0's replica is copied to every rank (a warning, once per
    /// run), so they never train different networks. A collective; nothing in one process.
    pub fn sync_replicas(&mut self, epoch: usize) -> Result<()> {
        if self.shard.ranks == 1 {
            return Ok(());
        }
        let mut bufs = Vec::new();
        for p in &self.params {
            let (wn, bn) = self.layers[p.layer].param_lens().expect("params");
            bufs.extend([(p.bufs.w, wn), (p.bufs.b, bn)]);
            for &(w, b) in &p.slots {
                bufs.extend([(w, wn), (b, bn)]);
            }
        }
        let mut words = vec![0; bufs.iter().map(|b| b.1).sum()];
        self.be.read_into(&bufs, &mut words)?;
        let digest = crate::dist::digest(bytemuck::cast_slice(&words));
        let differ = crate::dist::differing_ranks(self.comm.as_ref(), &digest)?;
        if differ.is_empty() {
            return Ok(());
        }
        if self.shard.rank == 0 && self.comm_time.resyncs == 0 {
            log::warn!(
                "after epoch {epoch} the replicas of rank(s) {differ:?} differ from rank 0's \
                 (their devices round the update differently); copying rank 0's weights and \
                 optimiser state to every rank after each epoch where they differ"
            );
        }
        self.comm
            .broadcast_f32(bytemuck::cast_slice_mut(&mut words))?;
        let mut at = 0;
        for &(b, n) in &bufs {
            self.be.write(b, &words[at..at + n])?;
            at += n;
        }
        self.comm_time.resyncs += 1;
        Ok(())
    }

    /// Metrics summed over the ranks.
    pub(super) fn sum_metrics(&self, acc: MetricsAcc) -> Result<MetricsAcc> {
        if self.shard.ranks == 1 {
            return Ok(acc);
        }
        let mut v = [
            acc.loss_sum as f64,
            acc.correct as f64,
            acc.seen as f64,
            acc.nonfinite as f64,
        ];
        self.comm.sum_f64(&mut v)?;
        Ok(MetricsAcc {
            loss_sum: v[0] as f32,
            correct: v[1] as u32,
            seen: v[2] as u32,
            nonfinite: v[3] as u32,
        })
    }
}
