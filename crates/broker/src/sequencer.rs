//! Puts an idempotent producer's concurrent requests to one partition in sequence order.
//!
//! A producer keeps several requests per partition in flight (pipelining), each batch carrying
//! its producer id and the sequence number of its first record. The server may pick them up in
//! any order, so the partition's leader writes a batch only when it is the producer's next one:
//! a batch that arrives ahead of its predecessors waits for them (bounded), and one that was
//! already written (a retry) is answered with where it landed instead of being written twice.
//!
//! This state is the leader's own and lives only for its term: a new leader starts from the
//! producer state its partition already has (a replicated partition's state machine), or from
//! nothing on a single node, where the first batch a producer sends after a restart is taken
//! as it comes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use strata_storage::AppendInfo;
use tokio::sync::Notify;

/// Producers remembered per partition; the least recently used one is forgotten beyond this
/// (its next batch is then taken as it comes, as after a restart).
const MAX_PRODUCERS: usize = 1024;
/// Written batches remembered per producer for answering retries (Kafka keeps five too).
const RECENT_BATCHES: usize = 5;

/// Where a batch stands against what its producer already sent to this leader.
#[derive(Debug, PartialEq)]
pub(crate) enum Turn {
    /// The producer's next batch: write it.
    Next,
    /// The first batch this leader sees from the producer this term: a single node writes
    /// it; a replicated leader asks its state machine first.
    First,
    /// Batches before it have not arrived yet: wait for them.
    Ahead,
    /// Written before: where it landed, if this leader still knows (a replicated leader
    /// learns it when the entry applies, so it answers `None` until then).
    Written(Option<AppendInfo>),
    /// Older than the batches remembered: cannot be told apart from a lost one.
    TooOld,
}

#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    state: Mutex<State>,
    /// Woken whenever a producer's next sequence moves.
    moved: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The leader term the producers below were written in.
    term: u64,
    producers: HashMap<i64, Producer>,
    /// Bumped on every write; a producer's `used` orders them for eviction.
    clock: u64,
}

#[derive(Debug)]
struct Producer {
    next_sequence: i32,
    /// The last batches written, oldest first: (first sequence, where it landed if known).
    recent: VecDeque<(i32, Option<AppendInfo>)>,
    used: u64,
}

impl Sequencer {
    /// Where batch `(producer, first_sequence)` stands in `term`. A new term forgets the
    /// last one's producers: what they wrote is in the log (and, replicated, in the state
    /// machine the caller asks next).
    pub(crate) fn turn(&self, term: u64, producer: i64, first_sequence: i32) -> Turn {
        let mut state = self.lock();
        if state.term != term {
            state.term = term;
            state.producers.clear();
        }
        let Some(known) = state.producers.get(&producer) else { return Turn::First };
        // Wrapping difference: sequences wrap at i32::MAX as Kafka's do.
        let ahead = first_sequence.wrapping_sub(known.next_sequence);
        if ahead == 0 {
            return Turn::Next;
        }
        if ahead > 0 {
            return Turn::Ahead;
        }
        match known.recent.iter().find(|(first, _)| *first == first_sequence) {
            Some((_, landed)) => Turn::Written(*landed),
            None => Turn::TooOld,
        }
    }

    /// Records that the batch `(producer, first_sequence)` of `records` records was written
    /// (or proposed) in `term`, and wakes the batches waiting behind it.
    pub(crate) fn written(
        &self,
        term: u64,
        producer: i64,
        first_sequence: i32,
        records: i32,
        landed: Option<AppendInfo>,
    ) {
        {
            let mut state = self.lock();
            if state.term != term {
                state.term = term;
                state.producers.clear();
            }
            state.clock += 1;
            let used = state.clock;
            if !state.producers.contains_key(&producer) && state.producers.len() >= MAX_PRODUCERS {
                let oldest = state.producers.iter().min_by_key(|(_, p)| p.used).map(|(id, _)| *id);
                if let Some(oldest) = oldest {
                    state.producers.remove(&oldest);
                }
            }
            let entry = state.producers.entry(producer).or_insert_with(|| Producer {
                next_sequence: first_sequence,
                recent: VecDeque::with_capacity(RECENT_BATCHES),
                used,
            });
            entry.next_sequence = first_sequence.wrapping_add(records);
            entry.used = used;
            if entry.recent.len() == RECENT_BATCHES {
                entry.recent.pop_front();
            }
            entry.recent.push_back((first_sequence, landed));
        }
        self.moved.notify_waiters();
    }

    /// A future that completes at the next `written`. Create it before releasing the lock
    /// that guards the check, so no write between the check and the wait is missed.
    pub(crate) fn next_write(&self) -> tokio::sync::futures::Notified<'_> {
        self.moved.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use strata_record::{Offset, Timestamp};

    use super::*;

    fn landed(base: u64, count: u64) -> Option<AppendInfo> {
        Some(AppendInfo {
            base_offset: Offset(base),
            last_offset: Offset(base + count - 1),
            max_timestamp: Timestamp(0),
        })
    }

    #[test]
    fn batches_are_written_in_sequence_order_and_retries_answered() {
        let seq = Sequencer::default();
        assert_eq!(seq.turn(1, 7, 0), Turn::First, "a new producer starts anywhere");
        seq.written(1, 7, 0, 10, landed(0, 10));
        assert_eq!(seq.turn(1, 7, 20), Turn::Ahead, "10..19 not written yet");
        assert_eq!(seq.turn(1, 7, 10), Turn::Next);
        seq.written(1, 7, 10, 10, landed(10, 10));
        assert_eq!(seq.turn(1, 7, 20), Turn::Next);
        assert_eq!(seq.turn(1, 7, 0), Turn::Written(landed(0, 10)), "a retry");
        for i in 2..8 {
            seq.written(1, 7, i * 10, 10, landed(i as u64 * 10, 10));
        }
        assert_eq!(seq.turn(1, 7, 0), Turn::TooOld, "only the last five are remembered");
        assert_eq!(seq.turn(1, 8, 0), Turn::First, "producers are independent");
    }

    #[test]
    fn a_new_term_forgets_the_producers() {
        let seq = Sequencer::default();
        seq.written(1, 7, 0, 10, None);
        assert_eq!(seq.turn(1, 7, 20), Turn::Ahead);
        assert_eq!(seq.turn(2, 7, 20), Turn::First);
    }

    #[test]
    fn sequences_wrap() {
        let seq = Sequencer::default();
        seq.written(1, 7, i32::MAX - 4, 10, None);
        assert_eq!(seq.turn(1, 7, (i32::MAX - 4).wrapping_add(10)), Turn::Next);
        assert_eq!(seq.turn(1, 7, (i32::MAX - 4).wrapping_add(20)), Turn::Ahead);
        assert_eq!(seq.turn(1, 7, i32::MAX - 4), Turn::Written(None));
    }

    #[test]
    fn producers_beyond_the_limit_evict_the_least_recently_used() {
        let seq = Sequencer::default();
        for producer in 0..MAX_PRODUCERS as i64 {
            seq.written(1, producer, 0, 1, None);
        }
        seq.written(1, 0, 1, 1, None); // producer 0 used again: 1 is now the oldest
        seq.written(1, 5000, 0, 1, None);
        assert_eq!(seq.turn(1, 1, 5), Turn::First, "forgotten: taken as it comes");
        assert_eq!(seq.turn(1, 0, 5), Turn::Ahead, "still known");
    }
}
