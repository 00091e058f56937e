//! Where clients go, decided from how busy each worker thread is: pure functions of the busy
//! shares (per mille of one core, over the last sampling period) and the clients each thread
//! holds, so that the rules are tested without threads.
//!
//! The aim is as few threads as keep each one under the busy mark: a second thread on a core
//! shared with PostgreSQL costs CPU (each thread has half the work, finds nothing to do more
//! often, sleeps and is woken again), so it is used only when one thread cannot keep up.
//! - A new client goes to the lowest-numbered thread under the mark.
//! - A thread over the mark hands part of its clients to the least busy thread, if that one has
//!   less than half its load: enough to even the two out.
//! - A thread whose load would fit, with a lower-numbered one's, under four fifths of the mark
//!   hands that thread all its clients. Spreading leaves two threads that together are over the
//!   mark, packing one under it, so the two rules do not undo each other.

/// Per mille of one core: the unit of every busy share here.
pub const WHOLE: u32 = 1000;

/// The thread a new client goes to: the lowest-numbered one under `mark`, or the least busy
/// when all are over it.
pub fn place(busy: &[u32], mark: u32) -> usize {
    busy.iter().position(|&b| b < mark).unwrap_or_else(|| least_busy(busy, usize::MAX))
}

/// A move of `clients` clients from one thread to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    /// The thread they go to.
    pub to: usize,
    /// How many (the first that are idle between transactions go).
    pub clients: u32,
}

/// What thread `me` hands to another, if anything: `busy` and `clients` hold every thread's
/// share and client count.
pub fn shed(me: usize, busy: &[u32], clients: &[u32], mark: u32) -> Option<Shed> {
    let (mine, have) = (busy[me], clients[me]);
    if have == 0 {
        return None;
    }
    if mine > mark {
        let to = least_busy(busy, me);
        let theirs = *busy.get(to)?;
        if theirs.saturating_mul(2) >= mine {
            return None;
        }
        // What evens the two out, at least one.
        let n = u64::from(have) * u64::from(mine - theirs) / (2 * u64::from(mine));
        return Some(Shed { to, clients: (n as u32).max(1) });
    }
    let fits = mark * 4 / 5;
    (0..me)
        .filter(|&j| busy[j].saturating_add(mine) < fits)
        .min_by_key(|&j| busy[j])
        .map(|to| Shed { to, clients: have })
}

/// The least busy thread but `not` (the lowest-numbered of equals).
fn least_busy(busy: &[u32], not: usize) -> usize {
    (0..busy.len()).filter(|&j| j != not).min_by_key(|&j| busy[j]).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_clients_fill_the_first_thread_under_the_mark() {
        assert_eq!(place(&[0, 0, 0], 700), 0);
        assert_eq!(place(&[650, 0, 0], 700), 0);
        assert_eq!(place(&[750, 300, 0], 700), 1);
        assert_eq!(place(&[900, 800, 750], 700), 2);
        assert_eq!(place(&[900, 800, 950], 700), 1);
    }

    #[test]
    fn a_thread_over_the_mark_evens_out_with_the_least_busy() {
        // 80% against 0%: half the clients.
        assert_eq!(shed(0, &[800, 0], &[16, 0], 700), Some(Shed { to: 1, clients: 8 }));
        // 90% against 30%: a third of them.
        assert_eq!(shed(0, &[900, 600, 300], &[30, 20, 10], 700), Some(Shed { to: 2, clients: 10 }));
        // The other thread has half the load or more: moving would not help.
        assert_eq!(shed(0, &[800, 400], &[16, 8], 700), None);
        // At least one client moves.
        assert_eq!(shed(0, &[710, 300], &[1, 3], 700), Some(Shed { to: 1, clients: 1 }));
        // Nothing to hand over.
        assert_eq!(shed(0, &[900, 0], &[0, 0], 700), None);
    }

    #[test]
    fn a_thread_whose_load_fits_on_a_lower_one_hands_it_everything() {
        // 20% + 20% fits under 56%: all of thread 1's clients go to thread 0.
        assert_eq!(shed(1, &[200, 200], &[8, 8], 700), Some(Shed { to: 0, clients: 8 }));
        // 30% + 30% does not; thread 0 never packs upwards.
        assert_eq!(shed(1, &[300, 300], &[8, 8], 700), None);
        assert_eq!(shed(0, &[100, 100], &[8, 8], 700), None);
        // The least busy of the lower threads takes them.
        assert_eq!(shed(2, &[400, 100, 50], &[8, 4, 2], 700), Some(Shed { to: 1, clients: 2 }));
    }

    #[test]
    fn spreading_and_packing_do_not_undo_each_other() {
        // Over the mark on one thread: spread; then the two halves stay apart.
        let Some(s) = shed(0, &[800, 0], &[16, 0], 700) else { panic!("spreads") };
        let busy = [400, 400];
        let clients = [16 - s.clients, s.clients];
        assert_eq!(shed(0, &busy, &clients, 700), None);
        assert_eq!(shed(1, &busy, &clients, 700), None);
        // Packed under four fifths of the mark: the one thread stays under the mark.
        assert!(shed(1, &[250, 250], &[8, 8], 700).is_some());
        assert_eq!(shed(0, &[500, 0], &[16, 0], 700), None);
    }
}
