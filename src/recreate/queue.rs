//! A rate-limited work queue with client-go's guarantees (§1.3, §1.4): a key is handed to
//! at most one worker at a time, a key added while it is being processed is handed out
//! again once the worker is done, and failing keys come back after an exponential delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::backoff::Backoff;

/// First delay of a failing key (kruise's default item rate limiter).
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Longest delay of a failing key.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(50);

#[derive(Default)]
struct State {
    order: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, Backoff>,
    /// The earliest pending delayed add of each key (client-go keeps only the earliest).
    scheduled: HashMap<String, Instant>,
    shutting_down: bool,
}

/// The queue of work keys (`<namespace>/<podName>` for the CRR controller).
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a key now. A key already waiting is not added twice; a key being processed is
    /// handed out again after [`WorkQueue::done`].
    pub fn add(&self, key: &str) {
        let mut state = self.lock();
        if state.shutting_down || !state.dirty.insert(key.to_owned()) {
            return;
        }
        if !state.processing.contains(key) {
            state.order.push_back(key.to_owned());
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Adds a key after `delay`. Of several delayed adds of one key only the earliest is
    /// kept; the sync it triggers asks again if it needs to.
    pub fn add_after(self: &Arc<Self>, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let due = Instant::now() + delay;
        {
            let mut state = self.lock();
            if state.shutting_down {
                return;
            }
            match state.scheduled.get(key) {
                Some(earlier) if *earlier <= due => return,
                _ => state.scheduled.insert(key.to_owned(), due),
            };
        }
        let queue = Arc::clone(self);
        let key = key.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let mine = {
                let mut state = queue.lock();
                let mine = state.scheduled.get(&key) == Some(&due);
                if mine {
                    state.scheduled.remove(&key);
                }
                mine
            };
            if mine {
                queue.add(&key);
            }
        });
    }

    /// Adds a failing key after its next back-off delay (500 ms doubling to 50 s).
    pub fn add_rate_limited(self: &Arc<Self>, key: &str) -> Duration {
        let delay = self
            .lock()
            .failures
            .entry(key.to_owned())
            .or_insert_with(|| Backoff::new(FIRST_RETRY_DELAY, MAX_RETRY_DELAY))
            .next_delay();
        self.add_after(key, delay);
        delay
    }

    /// Resets the back-off of a key after a success.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// Waits for the next key; `None` once the queue is shut down.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.shutting_down {
                    return None;
                }
                if let Some(key) = state.order.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    let more = !state.order.is_empty();
                    drop(state);
                    if more {
                        // Pass the wake-up on: one stored permit may stand for many adds.
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks a key processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.order.push_back(key.to_owned());
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Stops handing out keys; every waiting [`WorkQueue::get`] returns `None`.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.notify.notify_waiters();
    }

    /// Number of keys waiting to be handed out.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_handed_to_one_worker_at_a_time_and_requeued_when_added_meanwhile() {
        let queue = WorkQueue::new();
        queue.add("ns/a");
        queue.add("ns/a");
        queue.add("ns/b");
        assert_eq!(queue.len(), 2);
        let first = queue.get().await.unwrap();
        assert_eq!(first, "ns/a");
        queue.add("ns/a");
        // Still processing: not handed out again yet.
        assert_eq!(queue.get().await.unwrap(), "ns/b");
        assert!(queue.is_empty());
        queue.done("ns/a");
        assert_eq!(queue.get().await.unwrap(), "ns/a");
    }

    #[tokio::test]
    async fn shut_down_wakes_waiting_workers() {
        let queue = WorkQueue::new();
        let waiter = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.get().await })
        };
        tokio::task::yield_now().await;
        queue.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test]
    async fn failing_keys_back_off_exponentially_until_forgotten() {
        let queue = WorkQueue::new();
        let first = queue.add_rate_limited("ns/a");
        let second = queue.add_rate_limited("ns/a");
        assert!(first >= FIRST_RETRY_DELAY && first < FIRST_RETRY_DELAY * 2);
        assert!(second >= FIRST_RETRY_DELAY * 2);
        queue.forget("ns/a");
        assert!(queue.add_rate_limited("ns/a") < FIRST_RETRY_DELAY * 2);
    }

    #[tokio::test]
    async fn only_the_earliest_delayed_add_of_a_key_is_kept() {
        let queue = WorkQueue::new();
        let start = Instant::now();
        queue.add_after("ns/a", Duration::from_millis(200));
        queue.add_after("ns/a", Duration::from_millis(100));
        queue.add_after("ns/a", Duration::from_millis(300));
        let key = tokio::time::timeout(Duration::from_secs(5), queue.get()).await;
        assert_eq!(key.unwrap().as_deref(), Some("ns/a"));
        assert!(start.elapsed() < Duration::from_millis(200));
        queue.done("ns/a");
        // The superseded 200 ms and 300 ms adds never fire.
        let again = tokio::time::timeout(Duration::from_millis(400), queue.get()).await;
        assert!(again.is_err(), "{again:?}");
    }
}
