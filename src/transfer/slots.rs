//! Download slots for one store. Each pull brings its own limit
//! (max_concurrent_downloads): it never holds more slots than that, and the
//! store as a whole runs at most as many downloads as the largest limit of
//! the pulls running now, so a later pull with a higher limit widens the
//! pool and it shrinks back when that pull ends. Slots go by priority, then
//! round-robin between pulls, then first come first served within a pull:
//! a pull with 40 layers queued cannot starve a pull with one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub struct Slots {
    state: Mutex<State>,
}

struct State {
    in_use: usize,
    /// The pulls running now: their limit and the slots they hold.
    pulls: HashMap<u64, PullUse>,
    /// The pool size while no pull is registered (transfers still
    /// finishing after their pulls left).
    idle_capacity: usize,
    /// Invariant after every change: either no slot is free or every
    /// waiter whose pull is under its limit has given up.
    waiting: Vec<Waiter>,
    /// The pull served last, for round-robin.
    last_pull: u64,
    seq: u64,
}

struct PullUse {
    limit: usize,
    active: usize,
}

struct Waiter {
    pull: u64,
    priority: i32,
    seq: u64,
    tx: oneshot::Sender<Permit>,
}

/// One download slot; dropping it hands the slot to the next waiter.
pub struct Permit {
    /// None once disarmed: a permit that was never delivered.
    slots: Option<Arc<Slots>>,
    pull: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = self.slots.take() {
            s.release(self.pull);
        }
    }
}

/// A pull's registration; dropping it removes the pull's limit.
pub struct PullSlots {
    slots: Arc<Slots>,
    pull: u64,
}

impl Drop for PullSlots {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        if let Some(p) = s.pulls.remove(&self.pull) {
            s.idle_capacity = p.limit;
        }
        self.slots.dispatch(&mut s);
    }
}

impl State {
    fn capacity(&self) -> usize {
        let top = self.pulls.values().map(|p| p.limit).max();
        top.unwrap_or(self.idle_capacity)
    }

    /// Transfers outlive the pull that started them: an unknown pull has
    /// no limit of its own.
    fn under_limit(&self, pull: u64) -> bool {
        self.pulls.get(&pull).map_or(true, |p| p.active < p.limit)
    }

    fn take(&mut self, pull: u64) {
        self.in_use += 1;
        self.last_pull = pull;
        if let Some(p) = self.pulls.get_mut(&pull) {
            p.active += 1;
        }
    }

    fn put_back(&mut self, pull: u64) {
        self.in_use -= 1;
        if let Some(p) = self.pulls.get_mut(&pull) {
            p.active -= 1;
        }
    }
}

impl Slots {
    pub fn new(idle_capacity: usize) -> Arc<Slots> {
        Arc::new(Slots {
            state: Mutex::new(State {
                in_use: 0,
                pulls: HashMap::new(),
                idle_capacity,
                waiting: Vec::new(),
                last_pull: 0,
                seq: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a pull and its limit for as long as the guard lives.
    pub fn enter(self: &Arc<Self>, pull: u64, limit: usize) -> PullSlots {
        let mut s = self.lock();
        s.pulls.insert(pull, PullUse { limit, active: 0 });
        self.dispatch(&mut s);
        PullSlots {
            slots: self.clone(),
            pull,
        }
    }

    /// Wait for a slot. Dropping the future gives up the place in line.
    pub async fn acquire(self: &Arc<Self>, pull: u64, priority: i32) -> Permit {
        let rx = {
            let mut s = self.lock();
            if s.in_use < s.capacity() && s.under_limit(pull) {
                s.take(pull);
                return Permit {
                    slots: Some(self.clone()),
                    pull,
                };
            }
            let (tx, rx) = oneshot::channel();
            s.seq += 1;
            let seq = s.seq;
            s.waiting.push(Waiter {
                pull,
                priority,
                seq,
                tx,
            });
            rx
        };
        match rx.await {
            Ok(p) => p,
            // Only possible if Slots were torn down, which never happens
            // while a Permit or a waiter holds an Arc to them.
            Err(_) => unreachable!("download slots dropped with waiters"),
        }
    }

    fn release(self: &Arc<Self>, pull: u64) {
        let mut s = self.lock();
        s.put_back(pull);
        self.dispatch(&mut s);
    }

    /// Hand free slots to waiters until none is free or none may take one.
    fn dispatch(self: &Arc<Self>, s: &mut State) {
        while s.in_use < s.capacity() {
            let Some(i) = next(s) else { return };
            let w = s.waiting.swap_remove(i);
            s.take(w.pull);
            let permit = Permit {
                slots: Some(self.clone()),
                pull: w.pull,
            };
            // The waiter gave up. Disarm the returned permit (releasing it
            // would take this lock again) and give the slot back by hand.
            if let Err(mut p) = w.tx.send(permit) {
                drop(p.slots.take());
                s.put_back(w.pull);
            }
        }
    }

    /// Slots free right now (for tests).
    pub fn free(&self) -> usize {
        let s = self.lock();
        s.capacity().saturating_sub(s.in_use)
    }
}

/// Among waiters whose pull is under its limit: highest priority first;
/// then the next pull after the one served last; then the oldest request
/// of that pull.
fn next(s: &State) -> Option<usize> {
    let eligible = || {
        s.waiting
            .iter()
            .enumerate()
            .filter(|(_, w)| s.under_limit(w.pull))
    };
    let top = eligible().map(|(_, w)| w.priority).max()?;
    let candidates = || eligible().filter(move |(_, w)| w.priority == top);
    let pull = candidates()
        .map(|(_, w)| w.pull)
        .filter(|p| *p > s.last_pull)
        .min()
        .or_else(|| candidates().map(|(_, w)| w.pull).min())?;
    candidates()
        .filter(|(_, w)| w.pull == pull)
        .min_by_key(|(_, w)| w.seq)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_robin_between_pulls() {
        let slots = Slots::new(1);
        let first = slots.acquire(1, 0).await;
        let mut order = Vec::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Pull 1 queues three requests before pull 2 queues one.
        for (pull, n) in [(1u64, 0), (1, 1), (1, 2), (2, 0)] {
            let (s, tx) = (slots.clone(), tx.clone());
            tokio::spawn(async move {
                let p = s.acquire(pull, 0).await;
                tx.send((pull, n)).unwrap();
                drop(p);
            });
            tokio::task::yield_now().await;
        }
        drop(first);
        for _ in 0..4 {
            order.push(rx.recv().await.unwrap());
        }
        assert_eq!(
            order[0],
            (2, 0),
            "pull 2 goes before pull 1's backlog: {order:?}"
        );
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn each_pull_keeps_its_limit_and_the_pool_follows_the_largest() {
        let slots = Slots::new(3);
        let one = slots.enter(1, 1);
        let first = slots.acquire(1, 0).await;
        let s = slots.clone();
        let second = tokio::spawn(async move { s.acquire(1, 0).await });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "pull 1 may hold one slot only");
        assert_eq!(slots.free(), 0, "the pool is pull 1's limit");

        // A later pull with a higher limit widens the pool at once.
        let four = slots.enter(2, 4);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(slots.acquire(2, 0).await);
        }
        assert_eq!(slots.free(), 0);
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "pull 1 is still held to its limit");
        drop(first);
        let second = second.await.unwrap();

        // When it ends the pool shrinks back: nothing new until below 1.
        drop(four);
        drop(held);
        assert_eq!(slots.free(), 0);
        drop(second);
        assert_eq!(slots.free(), 1);
        drop(one);
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn priority_and_abandoned_waiters() {
        let slots = Slots::new(1);
        let held = slots.acquire(1, 0).await;
        let s2 = slots.clone();
        let abandoned = tokio::spawn(async move { s2.acquire(2, 5).await });
        tokio::task::yield_now().await;
        abandoned.abort();
        let _ = abandoned.await;
        let s3 = slots.clone();
        let waiting = tokio::spawn(async move { s3.acquire(3, 0).await });
        tokio::task::yield_now().await;
        drop(held);
        let p = waiting.await.unwrap();
        drop(p);
        assert_eq!(
            slots.free(),
            1,
            "the abandoned waiter must not leak the slot"
        );
    }
}
