//! Batching of concurrent requests' statements: the calls that arrive while one is running
//! are answered by one statement for all of them.
//!
//! Why: on this kind of machine each statement a request sends costs PostgreSQL far more
//! than the work in it (a sleeping backend woken, executor start-up, and for a write its
//! commit and WAL flush), and under load many requests send the same statement at the same
//! moment. The request that finds fewer than `max_leaders` batches running becomes a
//! leader: it takes every item queued (up to `max_batch`, its own among them), runs the
//! batch on its own connection, and hands each waiting request its answer. The others wait
//! on their blocking threads; one of those still queued leads the next batch. Nothing waits
//! for a batch to fill: an item that arrives alone runs at once, on its own request's
//! thread (a hand-off to a dedicated writer thread cost more CPU per request than batching
//! saved: docs/benchmarks-history.md, session 3).

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::PgConnection;

/// Most batches one thread leads in a row.
const LEAD_ON: usize = 4;

/// Runs a batch: one answer per item, in the items' order.
pub type BatchFn<T, R> = fn(&mut PgConnection, &[T]) -> Vec<R>;

/// An item waiting for a leader, and the thread to wake when it is answered.
struct Waiting<T> {
    ticket: u64,
    item: T,
    thread: Thread,
}

struct Queue<T, R> {
    /// leaders running a batch now
    leading: usize,
    waiting: VecDeque<Waiting<T>>,
    answers: HashMap<u64, R>,
    next_ticket: u64,
}

/// The queue shared by the requests of one server for one kind of statement.
pub struct Batcher<T, R> {
    queue: Arc<Mutex<Queue<T, R>>>,
    run: BatchFn<T, R>,
    /// the answer of an item whose batch panicked
    failed: fn() -> R,
    max_batch: usize,
    max_leaders: usize,
}

impl<T, R> Clone for Batcher<T, R> {
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

impl<T, R> Batcher<T, R> {
    /// Batches of at most `max_batch` items, at most `max_leaders` batches at a time.
    pub fn new(
        run: BatchFn<T, R>,
        failed: fn() -> R,
        max_batch: usize,
        max_leaders: usize,
    ) -> Self {
        Self {
            queue: Arc::new(Mutex::new(Queue {
                leading: 0,
                waiting: VecDeque::new(),
                answers: HashMap::new(),
                next_ticket: 0,
            })),
            run,
            failed,
            max_batch: max_batch.max(1),
            max_leaders: max_leaders.max(1),
        }
    }

    /// Answers `item`, in a batch with the other items waiting, run on `conn` when this
    /// request leads it. Blocking: call it off the actix workers. Inside a transaction of
    /// `conn`'s the item runs alone, since a batch there would commit or roll back with
    /// work the other requests know nothing of.
    pub fn run(&self, conn: &mut PgConnection, item: T) -> R {
        let in_transaction = AnsiTransactionManager::transaction_manager_status_mut(conn)
            .transaction_depth()
            .map_or(true, |depth| depth.is_some());
        if in_transaction {
            return self.lead(conn, &[item]).pop().unwrap_or_else(self.failed);
        }
        let mut queue = self.locked();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push_back(Waiting {
            ticket,
            item,
            thread: std::thread::current(),
        });
        // Holding a leader's slot, and the batches led with it: a leader whose own item is
        // answered leads the next batch too while items wait (up to LEAD_ON batches), so
        // that no other thread's wake-up stands between two batches; then it hands over.
        let mut holding = false;
        let mut led = 0;
        loop {
            if queue.answers.contains_key(&ticket) {
                if holding && led < LEAD_ON && !queue.waiting.is_empty() {
                    queue = self.lead_next(conn, queue, ticket, &mut led);
                    continue;
                }
                if holding {
                    queue.leading -= 1;
                    if let Some(next) = queue.waiting.front() {
                        next.thread.unpark();
                    }
                }
                return queue.answers.remove(&ticket).unwrap_or_else(self.failed);
            }
            if !queue.waiting.is_empty() && (holding || queue.leading < self.max_leaders) {
                if !holding {
                    queue.leading += 1;
                    holding = true;
                }
                queue = self.lead_next(conn, queue, ticket, &mut led);
                continue;
            }
            if holding {
                // nothing left to lead: this item is in another leader's batch
                queue.leading -= 1;
                holding = false;
            }
            drop(queue);
            // Woken when answered or called to lead; a spurious wake just looks again.
            std::thread::park();
            queue = self.locked();
        }
    }

    /// Takes the next batch off the queue, runs it without the lock, and posts its answers,
    /// waking the requests answered (all but `own`).
    fn lead_next<'q>(
        &'q self,
        conn: &mut PgConnection,
        mut queue: MutexGuard<'q, Queue<T, R>>,
        own: u64,
        led: &mut usize,
    ) -> MutexGuard<'q, Queue<T, R>> {
        *led += 1;
        let take = queue.waiting.len().min(self.max_batch);
        let batch: Vec<Waiting<T>> = queue.waiting.drain(..take).collect();
        drop(queue);
        let (tickets, rest): (Vec<u64>, Vec<(T, Thread)>) = batch
            .into_iter()
            .map(|w| (w.ticket, (w.item, w.thread)))
            .unzip();
        let (items, threads): (Vec<T>, Vec<Thread>) = rest.into_iter().unzip();
        let answers = self.lead(conn, &items);
        let mut queue = self.locked();
        for ((t, thread), answer) in tickets.into_iter().zip(threads).zip(answers) {
            queue.answers.insert(t, answer);
            if t != own {
                thread.unpark();
            }
        }
        queue
    }

    /// Runs one batch: exactly one answer per item, even when the batch function panics or
    /// miscounts, or later items would wait forever.
    fn lead(&self, conn: &mut PgConnection, items: &[T]) -> Vec<R> {
        let mut answers =
            catch_unwind(AssertUnwindSafe(|| (self.run)(conn, items))).unwrap_or_default();
        answers.truncate(items.len());
        while answers.len() < items.len() {
            answers.push((self.failed)());
        }
        answers
    }

    /// No code panics while holding the lock, but a poisoned lock must not stop the server.
    fn locked(&self) -> MutexGuard<'_, Queue<T, R>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
