//! Batching for requests that need nothing else from the database: the request waits for
//! its answer on its own actix worker, not on a blocking thread of its own.
//!
//! Why: in the blocking batcher this replaced every request, leader or not, holds a blocking thread
//! and a pool connection while it waits, and each answer is a thread wake-up more; about
//! 40 % of the server's CPU on the data-entry path went to switching threads (profile in
//! docs/benchmarks-history.md, session 4). Here an item is queued with a one-shot channel; the
//! request that finds fewer than `max_leaders` leaders at work starts one on the blocking pool,
//! which takes a connection and runs batch after batch until the queue is empty.
//!
//! A leader may also wait, for at most the `gather` window, before it runs a batch: until
//! the queue holds as many items as the last batch plus those that arrived while it ran
//! (the callers that are coming back), and for a first item before it gives up its
//! connection. Why: with a few busy clients and no waiting, batches alternate between the
//! half that came back early and the half that came back late (8 clients: 4 entries a
//! statement on average), so the one leader spends twice the statements' fixed cost on them
//! while the machine idles (docs/benchmarks-history.md, session 5). With nobody else coming the
//! expected size is 1 and nothing waits.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::r2d2::R2D2Connection;
use tokio::sync::oneshot;

use super::Pool;
use crate::error::AppError;

/// Runs a batch: one answer per item, in the items' order.
pub type BatchFn<T, R> = fn(&mut diesel::PgConnection, &[T]) -> Vec<R>;

struct Queue<T, R> {
    /// leaders at work now, asleep in their gather window included
    leading: usize,
    waiting: VecDeque<(T, oneshot::Sender<R>)>,
    /// a leader asleep in its gather window wants waking when the queue holds this many
    /// items (`usize::MAX`: no leader asleep)
    wake_at: usize,
    /// how many items the next batch is expected to hold
    expect: usize,
}

struct Shared<T, R> {
    queue: Mutex<Queue<T, R>>,
    wake: Condvar,
}

/// The queue shared by the requests of one server for one kind of statement.
pub struct AsyncBatcher<T, R> {
    shared: Arc<Shared<T, R>>,
    run: BatchFn<T, R>,
    /// the answer of an item whose batch could not run (no connection, a panic)
    failed: fn(AppError) -> R,
    max_batch: usize,
    max_leaders: usize,
    /// longest a leader waits for its batch to fill, or for a first item (zero: never)
    gather: Duration,
}

impl<T, R> Clone for AsyncBatcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            run: self.run,
            failed: self.failed,
            max_batch: self.max_batch,
            max_leaders: self.max_leaders,
            gather: self.gather,
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> AsyncBatcher<T, R> {
    /// Batches of at most `max_batch` items, at most `max_leaders` batches at a time, each
    /// leader waiting at most `gather` for its batch to fill.
    pub fn new(
        run: BatchFn<T, R>,
        failed: fn(AppError) -> R,
        max_batch: usize,
        max_leaders: usize,
        gather: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    leading: 0,
                    waiting: VecDeque::new(),
                    wake_at: usize::MAX,
                    expect: 1,
                }),
                wake: Condvar::new(),
            }),
            run,
            failed,
            max_batch: max_batch.max(1),
            max_leaders: max_leaders.max(1),
            gather,
        }
    }

    /// Answers `item`, in a batch with the other items waiting.
    pub async fn run(&self, pool: &Pool, item: T) -> R {
        let (tx, rx) = oneshot::channel();
        let (lead, wake) = {
            let mut queue = self.locked();
            queue.waiting.push_back((item, tx));
            if queue.waiting.len() >= queue.wake_at {
                queue.wake_at = usize::MAX;
                (false, true)
            } else if queue.wake_at == usize::MAX && queue.leading < self.max_leaders {
                // (a leader asleep in its window takes this item too)
                queue.leading += 1;
                (true, false)
            } else {
                (false, false)
            }
        };
        if wake {
            self.shared.wake.notify_all();
        }
        if lead {
            let (me, pool) = (self.clone(), pool.clone());
            // not awaited: this request waits for its answer like the others
            drop(actix_web::rt::task::spawn_blocking(move || me.lead(&pool)));
        }
        rx.await.unwrap_or_else(|_| {
            (self.failed)(AppError::Internal("a batch dropped its answer".into()))
        })
    }

    /// Runs batches on one connection while items wait; stops when the queue stays empty
    /// through the gather window (the check and the hand-back of the leader's slot under
    /// one lock, so no item is left without a leader).
    fn lead(&self, pool: &Pool) {
        let mut conn = pool.get();
        loop {
            let batch: Vec<(T, oneshot::Sender<R>)> = {
                let mut queue = self.gathered();
                if queue.waiting.is_empty() {
                    queue.leading -= 1;
                    return;
                }
                let take = queue.waiting.len().min(self.max_batch);
                queue.waiting.drain(..take).collect()
            };
            let (items, answer_to): (Vec<T>, Vec<oneshot::Sender<R>>) = batch.into_iter().unzip();
            let mut answers: Vec<R> = match conn.as_mut() {
                Ok(conn) => {
                    catch_unwind(AssertUnwindSafe(|| (self.run)(conn, &items))).unwrap_or_default()
                }
                Err(e) => items
                    .iter()
                    .map(|_| (self.failed)(AppError::Unavailable(e.to_string())))
                    .collect(),
            };
            answers.truncate(items.len());
            while answers.len() < items.len() {
                answers.push((self.failed)(AppError::Internal("batch panicked".into())));
            }
            {
                // counted before the answers go out, so no caller is counted twice
                let mut queue = self.locked();
                queue.expect = (items.len() + queue.waiting.len()).min(self.max_batch);
            }
            for (tx, answer) in answer_to.into_iter().zip(answers) {
                // a request that went away no longer waits for its answer
                let _ = tx.send(answer);
            }
            // a connection lost in the batch is given back (the pool drops it) for a new one
            let broken = match conn.as_mut() {
                Ok(c) => R2D2Connection::is_broken(&mut **c),
                Err(_) => true,
            };
            if broken {
                conn = pool.get();
            }
        }
    }

    /// The queue once it holds the expected batch, or a first item if it is empty, or the
    /// gather window is over, whichever comes first.
    fn gathered(&self) -> MutexGuard<'_, Queue<T, R>> {
        let started = Instant::now();
        let mut queue = self.locked();
        loop {
            let want = if queue.waiting.is_empty() {
                1
            } else {
                queue.expect.clamp(1, self.max_batch)
            };
            let left = self.gather.saturating_sub(started.elapsed());
            if queue.waiting.len() >= want || left.is_zero() {
                return queue;
            }
            // (another leader asleep may want fewer: the smaller wins)
            queue.wake_at = queue.wake_at.min(want);
            queue = match self.shared.wake.wait_timeout(queue, left) {
                Ok((queue, _)) => queue,
                Err(poisoned) => poisoned.into_inner().0,
            };
            // (so another leader still asleep may miss its mark: it then wakes at the end of
            // its window, at the latest)
            queue.wake_at = usize::MAX;
        }
    }

    /// No code panics while holding the lock, but a poisoned lock must not stop the server.
    fn locked(&self) -> MutexGuard<'_, Queue<T, R>> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
