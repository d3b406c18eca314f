//! Where password hashing runs: a few dedicated threads at the lowest CPU priority.
//!
//! argon2id costs ~20 ms of CPU per login by design. Run on actix's blocking pool at normal
//! priority, 16 concurrent logins were 16 runnable threads competing with every other request
//! and with PostgreSQL: the p99 of a cheap GET went up 40-100x during a login storm (measured,
//! docs/benchmarks-history.md). A semaphore of half the cores brought that to 6-7x. Here the
//! hashing threads ask the kernel for `SCHED_IDLE` (or, where refused, nice 19): they take only
//! CPU time that no normal-priority thread wants, and a waking request handler preempts them.
//! There is one thread fewer than cores by default (`password.hashing_threads`): with a hash on
//! every core, normal threads still waited a few ms behind one now and then (EEVDF weighs lag
//! too). Each hashing thread is pinned to one of the last cores, leaving the first to requests.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use thread_priority::unix::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
    ThreadSchedulePolicy,
};
use thread_priority::ThreadPriority;

use super::password::Hasher;

type Job = Box<dyn FnOnce(&Hasher) + Send>;

/// A fixed set of low-priority threads that run password work.
pub struct HashingPool {
    jobs: mpsc::Sender<Job>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How the hashing threads ended up scheduled (logged once at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowered {
    Idle,
    Nice19,
    Unchanged,
}

impl HashingPool {
    /// Starts `threads` hashing threads (at least one). They end with [`HashingPool::stop`].
    pub fn start(hasher: Hasher, threads: usize) -> std::io::Result<(Self, Lowered)> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (lowered_tx, lowered_rx) = mpsc::channel();
        let threads = threads.max(1);
        let cores = pinned_cores(threads);
        let mut handles = Vec::with_capacity(threads);
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            let hasher = hasher.clone();
            let lowered_tx = lowered_tx.clone();
            let core = cores.get(n).copied();
            let handle = std::thread::Builder::new()
                .name(format!("casebook-hash-{n}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::warn!(core = core.id, "could not pin a hashing thread");
                        }
                    }
                    let _ = lowered_tx.send(lower_priority());
                    drop(lowered_tx);
                    work(&queue, &hasher);
                })?;
            handles.push(handle);
        }
        drop(lowered_tx);
        // the weakest outcome among the threads
        let lowered = lowered_rx
            .iter()
            .max_by_key(|l| *l as u8)
            .unwrap_or(Lowered::Unchanged);
        Ok((
            Self {
                jobs,
                threads: handles,
            },
            lowered,
        ))
    }

    /// Lets the threads finish the jobs already queued, then waits for them to end.
    pub fn stop(self) {
        drop(self.jobs);
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Runs `work` on a hashing thread and waits (asynchronously) for its answer.
    pub async fn run<T, F>(&self, work: F) -> Result<T, &'static str>
    where
        F: FnOnce(&Hasher) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |h| {
            let _ = tx.send(work(h));
        });
        self.jobs
            .send(job)
            .map_err(|_| "the hashing threads have stopped")?;
        rx.await.map_err(|_| "password hashing failed")
    }
}

fn work(queue: &Mutex<mpsc::Receiver<Job>>, hasher: &Hasher) {
    loop {
        // The lock is held only while waiting for the next job, not while hashing.
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking job drops its answer channel (the caller sees an error); the thread
        // stays for the next job.
        let _ = catch_unwind(AssertUnwindSafe(|| job(hasher)));
    }
}

/// The cores the hashing threads keep to, one each: the last of the cores this process may
/// use, so that the first stays free of hashing; none when there are not more cores than
/// threads. Left free to move, a hashing thread shared both cores with the requests in turn,
/// and the p99 of a cheap GET during a login storm was twice as long as with the thread
/// pinned (4.0-4.2 ms against 2.0-2.5 ms, docs/benchmarks-history.md, session 4).
fn pinned_cores(threads: usize) -> Vec<core_affinity::CoreId> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() <= threads {
        return Vec::new();
    }
    cores.into_iter().rev().take(threads).collect()
}

fn lower_priority() -> Lowered {
    let me = thread_native_id();
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if set_thread_priority_and_policy(me, ThreadPriority::Min, idle).is_ok() {
        return Lowered::Idle;
    }
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
    if set_thread_priority_and_policy(me, ThreadPriority::Min, batch).is_ok() {
        return Lowered::Nice19;
    }
    Lowered::Unchanged
}
