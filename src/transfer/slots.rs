//! Download slots for one store: a fixed number of concurrent downloads,
//! handed out by priority, then round-robin between pulls, then first come
//! first served within a pull. A pull with 40 layers queued cannot starve a
//! pull with one.

use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub struct Slots {
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// Invariant: while `free > 0` every entry here is abandoned.
    waiting: Vec<Waiter>,
    /// The pull served last, for round-robin.
    last_pull: u64,
    seq: u64,
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
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = self.slots.take() {
            s.release();
        }
    }
}

impl Slots {
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            state: Mutex::new(State {
                free: n,
                waiting: Vec::new(),
                last_pull: 0,
                seq: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a slot. Dropping the future gives up the place in line.
    pub async fn acquire(self: &Arc<Self>, pull: u64, priority: i32) -> Permit {
        let rx = {
            let mut s = self.lock();
            if s.free > 0 {
                s.free -= 1;
                s.last_pull = pull;
                return Permit {
                    slots: Some(self.clone()),
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

    fn release(self: &Arc<Self>) {
        let mut s = self.lock();
        while let Some(i) = next(&s) {
            let w = s.waiting.swap_remove(i);
            s.last_pull = w.pull;
            match w.tx.send(Permit {
                slots: Some(self.clone()),
            }) {
                Ok(()) => return,
                // The waiter gave up. Disarm the returned permit (releasing
                // it would take this lock again): the slot stays ours to
                // hand on.
                Err(mut p) => drop(p.slots.take()),
            }
        }
        s.free += 1;
    }

    /// Slots free right now (for tests).
    pub fn free(&self) -> usize {
        self.lock().free
    }
}

/// Highest priority first; then the next pull after the one served last;
/// then the oldest request of that pull.
fn next(s: &State) -> Option<usize> {
    let top = s.waiting.iter().map(|w| w.priority).max()?;
    let candidates = || {
        s.waiting
            .iter()
            .enumerate()
            .filter(move |(_, w)| w.priority == top)
    };
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
