//! The producer's bounded buffer (Kafka's `buffer.memory`): bytes of records added and not
//! yet answered, and the callers of `send` waiting for room, served first come first served
//! as Kafka's `BufferPool` serves them, so that a large record is not overtaken forever by
//! smaller ones that fit.

use std::collections::VecDeque;

pub(crate) struct BufferRoom {
    limit: usize,
    used: usize,
    /// Tickets of the callers waiting for room, in the order they came.
    waiting: VecDeque<u64>,
    next_ticket: u64,
    /// Room was freed or the line moved since the waiters last looked.
    changed: bool,
}

impl BufferRoom {
    pub(crate) fn new(limit: usize) -> BufferRoom {
        BufferRoom { limit, used: 0, waiting: VecDeque::new(), next_ticket: 0, changed: false }
    }

    /// Takes room for `bytes` for a caller holding `ticket` (`None`: it just came) if it is
    /// its turn and the room is there: the buffer holds it, or holds nothing (a record larger
    /// than the whole buffer goes alone). Otherwise the caller is given a ticket, if it had
    /// none, and waits for [`BufferRoom::wake_waiters`].
    pub(crate) fn take(&mut self, bytes: usize, ticket: &mut Option<u64>) -> bool {
        let my_turn = match ticket {
            None => self.waiting.is_empty(),
            Some(ticket) => self.waiting.front() == Some(ticket),
        };
        let fits = self.used == 0 || self.used + bytes <= self.limit;
        if my_turn && fits {
            if ticket.take().is_some() {
                self.waiting.pop_front();
                // The next in line may fit too.
                self.changed = true;
            }
            self.used += bytes;
            return true;
        }
        if ticket.is_none() {
            *ticket = Some(self.next_ticket);
            self.waiting.push_back(self.next_ticket);
            self.next_ticket += 1;
        }
        false
    }

    /// `bytes` taken earlier are free again (their records were answered).
    pub(crate) fn give_back(&mut self, bytes: usize) {
        self.used -= bytes;
        self.changed = true;
    }

    /// A waiting caller gave up (its `send` was dropped): the line moves on without it.
    pub(crate) fn leave(&mut self, ticket: u64) {
        if let Some(at) = self.waiting.iter().position(|&t| t == ticket) {
            self.waiting.remove(at);
            self.changed = true;
        }
    }

    /// Whether the waiting callers should look again.
    pub(crate) fn wake_waiters(&mut self) -> bool {
        std::mem::take(&mut self.changed) && !self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_waiting_for_room_are_served_in_the_order_they_came() {
        let mut room = BufferRoom::new(100);
        let (mut a, mut big, mut small) = (None, None, None);
        assert!(room.take(60, &mut a), "room for it");
        assert!(!room.take(90, &mut big), "60 + 90 is over 100");
        assert!(!room.take(10, &mut small), "fits, but must not overtake the one waiting");
        assert!(!room.wake_waiters(), "nothing freed yet");
        room.give_back(60);
        assert!(room.wake_waiters());
        assert!(!room.take(10, &mut small), "still behind the large one");
        assert!(room.take(90, &mut big), "first in line, and it fits now");
        assert!(room.take(10, &mut small), "next in line, and it fits");
        assert!(!room.wake_waiters(), "nobody waits any more");
    }

    #[test]
    fn a_record_larger_than_the_buffer_goes_alone_and_one_that_gives_up_leaves_the_line() {
        let mut room = BufferRoom::new(0);
        let (mut a, mut b, mut c) = (None, None, None);
        assert!(room.take(500, &mut a), "an empty buffer takes any record");
        assert!(!room.take(1, &mut b));
        assert!(!room.take(1, &mut c));
        room.leave(b.expect("b waits with a ticket"));
        room.give_back(500);
        assert!(room.wake_waiters());
        assert!(room.take(1, &mut c), "b left: c is first in line");
    }
}
