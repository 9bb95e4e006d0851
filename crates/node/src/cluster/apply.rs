//! Applying a node's shards at the same time: the engine polls one replica with
//! committed entries itself and hands each other such replica to a persistent thread
//! ("settle-apply") of this pool, at most one per thread.
//!
//! The threads live as long as the engine. (One thread started per round cost tens
//! of microseconds of the engine's time, and on a busy machine a new thread often got
//! no core until the engine blocked to join it: the shards then applied one after the
//! other after all.) A replica handed out and not yet taken by its thread when the
//! engine is done with its own is taken back and polled by the engine, so a late
//! thread never makes the engine wait; a replica its thread took is waited for.
//!
//! Touches: only the replicas handed to it, moved to a thread and back within one
//! `poll_all` call. A poll that panics on a thread panics the engine's thread, as it
//! would have there.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use settle_replica::Replica;

use super::TIMELINE;

/// What the pool polls: a replica (a stand-in in tests).
pub trait Shard: Send + 'static {
    type Output: Send + 'static;
    /// Whether a poll would apply entries (worth a thread).
    fn has_work(&self) -> bool;
    fn poll(&mut self) -> Self::Output;
}

impl Shard for Replica {
    type Output = settle_replica::Output;
    fn has_work(&self) -> bool {
        Replica::has_work(self)
    }
    fn poll(&mut self) -> Self::Output {
        Replica::poll(self)
    }
}

type Panic = Box<dyn Any + Send>;

pub struct ApplyPool<S: Shard = Replica> {
    workers: Vec<Worker<S>>,
}

struct Worker<S: Shard> {
    shared: Arc<Shared<S>>,
    thread: Option<thread::JoinHandle<()>>,
}

struct Shared<S: Shard> {
    slot: Mutex<Slot<S>>,
    /// Signalled when the slot changes.
    changed: Condvar,
}

/// One replica's trip to a thread and back.
enum Slot<S: Shard> {
    Idle,
    /// Handed out, not yet taken by the thread (the engine may take it back).
    Queued(u64, Box<S>),
    /// The thread polls it.
    Polling,
    /// Polled: the replica and its output, or the poll's panic.
    Done(u64, Box<S>, Result<S::Output, Panic>),
    Stop,
}

impl<S: Shard> ApplyPool<S> {
    /// A pool of `threads` threads (0: the engine polls every replica itself).
    pub fn start(threads: usize) -> std::io::Result<ApplyPool<S>> {
        let mut pool = ApplyPool { workers: Vec::with_capacity(threads) };
        for _ in 0..threads {
            let shared = Arc::new(Shared { slot: Mutex::new(Slot::Idle), changed: Condvar::new() });
            let theirs = Arc::clone(&shared);
            // On failure, the threads started so far are stopped by `drop(pool)`.
            let thread =
                thread::Builder::new().name("settle-apply".into()).spawn(move || work(&theirs))?;
            pool.workers.push(Worker { shared, thread: Some(thread) });
        }
        Ok(pool)
    }

    /// Polls every replica, those with entries to apply at the same time when there
    /// are two or more: the first with the engine, the next ones each on a thread
    /// (while threads last), the rest with the engine after its first. Outputs come
    /// back in shard order; every replica is in `replicas` again on return.
    pub fn poll_all(&mut self, replicas: &mut BTreeMap<u64, S>) -> Vec<(u64, S::Output)> {
        let busy: Vec<u64> =
            replicas.iter().filter(|(_, r)| r.has_work()).map(|(&shard, _)| shard).collect();
        let mut handed = Vec::new();
        if busy.len() >= 2 {
            for (worker, &shard) in self.workers.iter().zip(&busy[1..]) {
                let replica = replicas.remove(&shard).expect("listed above");
                worker.hand(shard, Box::new(replica));
                handed.push(worker);
            }
        }
        let mut outputs: Vec<(u64, S::Output)> = replicas
            .iter_mut()
            .map(|(&shard, replica)| (shard, traced_poll(shard, replica)))
            .collect();
        for worker in handed {
            let (shard, replica, output) = match worker.take_back() {
                Some((shard, mut replica)) => {
                    let output = traced_poll(shard, &mut *replica);
                    (shard, replica, output)
                }
                None => {
                    let (shard, replica, output) = worker.wait_done();
                    (shard, replica, output.unwrap_or_else(|panic| panic::resume_unwind(panic)))
                }
            };
            let previous = replicas.insert(shard, *replica);
            assert!(previous.is_none(), "a shard is polled once per round");
            outputs.push((shard, output));
        }
        outputs.sort_unstable_by_key(|(shard, _)| *shard);
        outputs
    }
}

impl<S: Shard> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Slot<S>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Shard> Worker<S> {
    fn lock(&self) -> MutexGuard<'_, Slot<S>> {
        self.shared.lock()
    }

    fn hand(&self, shard: u64, replica: Box<S>) {
        let mut slot = self.lock();
        assert!(matches!(*slot, Slot::Idle), "one replica per thread at a time");
        *slot = Slot::Queued(shard, replica);
        drop(slot);
        self.shared.changed.notify_one();
    }

    /// The replica handed out, if its thread has not taken it yet.
    fn take_back(&self) -> Option<(u64, Box<S>)> {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Slot::Idle) {
            Slot::Queued(shard, replica) => Some((shard, replica)),
            taken => {
                *slot = taken;
                None
            }
        }
    }

    fn wait_done(&self) -> (u64, Box<S>, Result<S::Output, Panic>) {
        let mut slot = self.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Idle) {
                Slot::Done(shard, replica, output) => return (shard, replica, output),
                Slot::Polling => *slot = Slot::Polling,
                _ => unreachable!("taken by its thread, so polling or done"),
            }
            slot = self.shared.changed.wait(slot).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// `replica.poll()`, between two timeline events when the work is worth one.
fn traced_poll<S: Shard>(shard: u64, replica: &mut S) -> S::Output {
    if !replica.has_work() {
        return replica.poll();
    }
    tracing::trace!(target: TIMELINE, shard, "applying");
    let output = replica.poll();
    tracing::trace!(target: TIMELINE, shard, "applied");
    output
}

/// A thread's loop: take what is handed, poll it, hand it back; until `Stop`.
fn work<S: Shard>(shared: &Shared<S>) {
    let mut slot = shared.lock();
    loop {
        match std::mem::replace(&mut *slot, Slot::Polling) {
            Slot::Queued(shard, mut replica) => {
                drop(slot);
                let poll = || traced_poll(shard, &mut *replica);
                let output = panic::catch_unwind(AssertUnwindSafe(poll));
                slot = shared.lock();
                if matches!(*slot, Slot::Stop) {
                    return; // The engine is gone (it panicked while this polled).
                }
                *slot = Slot::Done(shard, replica, output);
                shared.changed.notify_one();
            }
            Slot::Stop => return,
            idle => {
                *slot = idle;
                slot = shared.changed.wait(slot).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

impl<S: Shard> Drop for ApplyPool<S> {
    fn drop(&mut self) {
        for worker in &self.workers {
            *worker.lock() = Slot::Stop;
            worker.shared.changed.notify_one();
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                // Its poll's panic, if any, was the engine's to raise.
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A stand-in replica: its poll says which thread ran it; it may first tell
    /// another poll it started, or wait to be told.
    struct Fake {
        shard: u64,
        work: bool,
        panics: bool,
        tell: Option<mpsc::Sender<()>>,
        wait: Option<mpsc::Receiver<()>>,
    }

    impl Shard for Fake {
        type Output = (u64, String);
        fn has_work(&self) -> bool {
            self.work
        }
        fn poll(&mut self) -> (u64, String) {
            if let Some(tell) = self.tell.take() {
                tell.send(()).expect("the other poll waits");
            }
            assert!(!self.panics, "shard {} panics", self.shard);
            if let Some(wait) = self.wait.take() {
                // (Not a timing: a guard against hanging forever if the pool is broken.)
                let limit = std::time::Duration::from_secs(60);
                wait.recv_timeout(limit).expect("the handed shard was polled on a thread");
            }
            (self.shard, thread::current().name().unwrap_or("").to_string())
        }
    }

    fn fakes(work: &[bool]) -> BTreeMap<u64, Fake> {
        let fake = |(i, &work): (usize, &bool)| {
            let shard = i as u64 + 1;
            (shard, Fake { shard, work, panics: false, tell: None, wait: None })
        };
        work.iter().enumerate().map(fake).collect()
    }

    fn caller() -> String {
        thread::current().name().unwrap_or("").to_string()
    }

    #[test]
    fn shards_with_work_are_polled_on_the_pool_and_come_back_in_order() {
        let mut pool = ApplyPool::<Fake>::start(2).expect("threads start");
        let mut replicas = fakes(&[true, false, true, true, true]);
        // In the first round, shard 1 (the caller's) waits until shard 3 started: so
        // shard 3 cannot be taken back, and must run on a pool thread.
        let (tell, wait) = mpsc::channel();
        replicas.get_mut(&1).expect("shard 1").wait = Some(wait);
        replicas.get_mut(&3).expect("shard 3").tell = Some(tell);
        for round in 0..50 {
            let outputs = pool.poll_all(&mut replicas);
            let shards: Vec<u64> = outputs.iter().map(|(shard, _)| *shard).collect();
            assert_eq!(shards, [1, 2, 3, 4, 5], "round {round}");
            assert!(outputs.iter().all(|(shard, (polled, _))| shard == polled));
            assert_eq!(replicas.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
            // The first with work and those without stay with the caller, and so does
            // a third one with work (two threads); a handed one runs on the pool or,
            // when its thread was late, with the caller.
            for index in [0, 1, 4] {
                assert_eq!(outputs[index].1 .1, caller(), "round {round}, shard {}", index + 1);
            }
            if round == 0 {
                assert_eq!(outputs[2].1 .1, "settle-apply", "shard 3 ran on the pool");
            }
        }
    }

    #[test]
    fn without_threads_the_caller_polls_everything() {
        let mut pool = ApplyPool::<Fake>::start(0).expect("no threads");
        let mut replicas = fakes(&[true, true, true]);
        let outputs = pool.poll_all(&mut replicas);
        assert_eq!(outputs.len(), 3);
        assert!(outputs.iter().all(|(_, (_, name))| *name == caller()));
    }

    #[test]
    fn a_poll_that_panics_on_a_thread_panics_the_caller() {
        let mut pool = ApplyPool::<Fake>::start(1).expect("threads start");
        let mut replicas = fakes(&[true, true]);
        // Shard 1 waits until shard 2 started, so shard 2 panics on the pool's thread.
        let (tell, wait) = mpsc::channel();
        replicas.get_mut(&1).expect("shard 1").wait = Some(wait);
        let fake = replicas.get_mut(&2).expect("shard 2");
        fake.tell = Some(tell);
        fake.panics = true;
        let caught = panic::catch_unwind(AssertUnwindSafe(|| pool.poll_all(&mut replicas)));
        let message = caught.expect_err("the panic reaches the caller");
        let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("shard 2 panics"), "{message}");
        drop(pool); // Stops and joins its thread.
    }
}
