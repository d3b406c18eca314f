//! Batching for requests that need nothing else from the database: the request waits for
//! its answer on its own actix worker, not on a blocking thread of its own.
//!
//! Why: in [`super::batch::Batcher`] every request, leader or not, holds a blocking thread
//! and a pool connection while it waits, and each answer is a thread wake-up more; about
//! 40 % of the server's CPU on the data-entry path went to switching threads (profile in
//! BENCHMARKS.md, session 4). Here an item is queued with a one-shot channel; the request
//! that finds fewer than `max_leaders` leaders at work starts one on the blocking pool,
//! which takes a connection and runs batch after batch until the queue is empty.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use diesel::r2d2::R2D2Connection;
use tokio::sync::oneshot;

use super::batch::BatchFn;
use super::Pool;
use crate::error::AppError;

struct Queue<T, R> {
    /// leaders at work now
    leading: usize,
    waiting: VecDeque<(T, oneshot::Sender<R>)>,
}

/// The queue shared by the requests of one server for one kind of statement.
pub struct AsyncBatcher<T, R> {
    queue: Arc<Mutex<Queue<T, R>>>,
    run: BatchFn<T, R>,
    /// the answer of an item whose batch could not run (no connection, a panic)
    failed: fn(AppError) -> R,
    max_batch: usize,
    max_leaders: usize,
}

impl<T, R> Clone for AsyncBatcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            run: self.run,
            failed: self.failed,
            max_batch: self.max_batch,
            max_leaders: self.max_leaders,
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> AsyncBatcher<T, R> {
    /// Batches of at most `max_batch` items, at most `max_leaders` batches at a time.
    pub fn new(
        run: BatchFn<T, R>,
        failed: fn(AppError) -> R,
        max_batch: usize,
        max_leaders: usize,
    ) -> Self {
        Self {
            queue: Arc::new(Mutex::new(Queue {
                leading: 0,
                waiting: VecDeque::new(),
            })),
            run,
            failed,
            max_batch: max_batch.max(1),
            max_leaders: max_leaders.max(1),
        }
    }

    /// Answers `item`, in a batch with the other items waiting.
    pub async fn run(&self, pool: &Pool, item: T) -> R {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut queue = self.locked();
            queue.waiting.push_back((item, tx));
            let lead = queue.leading < self.max_leaders;
            if lead {
                queue.leading += 1;
            }
            lead
        };
        if lead {
            let (me, pool) = (self.clone(), pool.clone());
            // not awaited: this request waits for its answer like the others
            drop(actix_web::rt::task::spawn_blocking(move || me.lead(&pool)));
        }
        rx.await.unwrap_or_else(|_| {
            (self.failed)(AppError::Internal("a batch dropped its answer".into()))
        })
    }

    /// Runs batches on one connection while items wait; stops when the queue is empty (the
    /// check and the hand-back of the leader's slot under one lock, so no item is left
    /// without a leader).
    fn lead(&self, pool: &Pool) {
        let mut conn = pool.get();
        loop {
            let batch: Vec<(T, oneshot::Sender<R>)> = {
                let mut queue = self.locked();
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

    /// No code panics while holding the lock, but a poisoned lock must not stop the server.
    fn locked(&self) -> MutexGuard<'_, Queue<T, R>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
