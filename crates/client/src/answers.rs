//! A partition's batch answers, given in the order the batches were sent.
//!
//! Pipelined batches of one partition travel in different requests, answered on different
//! tasks, so their answers can come back in any order. Kafka runs a partition's callbacks in
//! offset order, and so does this producer: a batch answered early is held until the ones sent
//! before it are answered (the leader writes them in order anyway, so rarely for long).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use strata_record::Offset;

use crate::Result;
use crate::producer::Waiter;
use crate::record::Delivered;

/// One partition's answers, shared by the requests that carry its batches.
pub(crate) type Answers = Arc<PartitionAnswers>;

#[derive(Default)]
pub(crate) struct PartitionAnswers {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The number of the next batch to answer.
    next: u64,
    held: BTreeMap<u64, Answer>,
    /// A task is running answers now: others leave theirs to it, so that two tasks never
    /// answer one partition's batches at the same time (and out of order).
    answering: bool,
}

struct Answer {
    waiters: Vec<Waiter>,
    partition: u32,
    outcome: Result<Offset>,
}

impl PartitionAnswers {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Batch `number` of `partition` was answered with `outcome`. Its waiters are answered
    /// once every batch before it was, by this task or by the one answering at the time;
    /// futures and callbacks run outside the lock.
    pub(crate) fn settle(
        &self,
        number: u64,
        waiters: Vec<Waiter>,
        partition: u32,
        outcome: Result<Offset>,
    ) {
        let mut state = self.lock();
        state.held.insert(number, Answer { waiters, partition, outcome });
        if state.answering {
            return;
        }
        state.answering = true;
        loop {
            let mut ready = Vec::new();
            loop {
                let next = state.next;
                let Some(answer) = state.held.remove(&next) else { break };
                ready.push(answer);
                state.next = next + 1;
            }
            if ready.is_empty() {
                state.answering = false;
                return;
            }
            drop(state);
            for Answer { waiters, partition, outcome } in ready {
                resolve(waiters, partition, outcome);
            }
            state = self.lock();
        }
    }
}

/// Answers each record's future or callback: record `i` of a batch stored at `base` got offset
/// `base + i`. (A callback that panics is caught by its waiter.)
fn resolve(waiters: Vec<Waiter>, partition: u32, outcome: Result<Offset>) {
    for (i, waiter) in waiters.into_iter().enumerate() {
        let delivered =
            outcome.clone().map(|base| Delivered { partition, offset: Some(base.plus(i as u64)) });
        waiter.answer(delivered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientError;

    #[test]
    fn a_batch_answered_early_waits_for_the_ones_before_it() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiter = |tag: &'static str| {
            let order = order.clone();
            Waiter::callback(move |outcome| {
                order.lock().unwrap().push((tag, outcome.ok().and_then(|d| d.offset)))
            })
        };
        let answers = PartitionAnswers::default();
        answers.settle(2, vec![waiter("third")], 0, Ok(Offset(20)));
        answers.settle(1, vec![waiter("second"), waiter("second+1")], 0, Ok(Offset(10)));
        assert!(order.lock().unwrap().is_empty(), "held until batch 0 is answered");
        answers.settle(0, vec![waiter("first")], 0, Err(ClientError::Closed));
        let seen = order.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                ("first", None),
                ("second", Some(Offset(10))),
                ("second+1", Some(Offset(11))),
                ("third", Some(Offset(20)))
            ]
        );
        answers.settle(3, vec![waiter("fourth")], 0, Ok(Offset(21)));
        assert_eq!(order.lock().unwrap().len(), 5, "in turn: answered at once");
    }

    #[test]
    fn a_callback_may_wait_for_another_task_answering_the_same_partition() {
        // Callbacks run outside the lock: one that blocks until another thread settled a
        // later batch does not deadlock it (that batch is left to this task, in order).
        let answers = Arc::new(PartitionAnswers::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let (started, later_settled) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
        let (started_tx, started_rx) = started;
        let (settled_tx, settled_rx) = later_settled;
        let first_order = order.clone();
        let first = Waiter::callback(move |_| {
            started_tx.send(()).unwrap();
            settled_rx.recv().unwrap();
            first_order.lock().unwrap().push(0);
        });
        let second_order = order.clone();
        let second = Waiter::callback(move |_| second_order.lock().unwrap().push(1));
        let other = answers.clone();
        let thread = std::thread::spawn(move || {
            started_rx.recv().unwrap();
            other.settle(1, vec![second], 0, Ok(Offset(1)));
            settled_tx.send(()).unwrap();
        });
        answers.settle(0, vec![first], 0, Ok(Offset(0)));
        thread.join().unwrap();
        assert_eq!(*order.lock().unwrap(), [0, 1]);
    }
}
