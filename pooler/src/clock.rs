//! The monotonic clock of the hot path, in whole microseconds: what a transaction's timestamps,
//! its statistics and a server's idle time are kept in. Reading it is one vDSO call and a
//! multiply; subtracting two readings is a `u64` subtraction. `Instant` stays for tokio's
//! timers; [`Micros::deadline`] turns a reading into one.
//!
//! A transaction read the clock four times and subtracted instants six times (std normalises
//! seconds and nanoseconds at every subtraction): about 300 instructions of about 7,000, for
//! statistics that are kept in microseconds anyway.

use std::num::NonZeroU64;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// A reading of CLOCK_MONOTONIC in microseconds (time since an unspecified start, the same for
/// every thread of the process). Never zero, so that an `Option<Micros>` (a relay's query and
/// transaction start, kept in every client's task) takes eight bytes, not sixteen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(NonZeroU64);

impl Micros {
    /// The clock now.
    #[inline]
    pub fn now() -> Self {
        // Through libc (glibc's vDSO call). CLOCK_MONOTONIC cannot fail on Linux, and it is never
        // negative; u64 microseconds last 584,000 years.
        let us = match clock_gettime(ClockId::CLOCK_MONOTONIC) {
            Ok(t) => t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000,
            Err(_) => 0,
        };
        Micros::from_u64(us)
    }

    /// Microseconds from `earlier` to `self`, 0 if `earlier` is later.
    #[inline]
    pub fn micros_since(self, earlier: Micros) -> u64 {
        self.0.get().saturating_sub(earlier.0.get())
    }

    /// [`Micros::micros_since`] as a `Duration`.
    #[inline]
    pub fn since(self, earlier: Micros) -> Duration {
        Duration::from_micros(self.micros_since(earlier))
    }

    /// Time from `self` to now.
    pub fn elapsed(self) -> Duration {
        Micros::now().since(self)
    }

    /// `self` plus `d` (saturating).
    #[inline]
    pub fn after(self, d: Duration) -> Micros {
        Micros(self.0.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }

    /// The raw count, for values kept in atomics.
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }

    /// A raw count back (see [`Micros::as_u64`]); 0, which no reading is, becomes 1.
    pub fn from_u64(us: u64) -> Micros {
        Micros(NonZeroU64::new(us).unwrap_or(NonZeroU64::MIN))
    }

    /// The tokio instant of this reading, for a timer: `now` is the same moment on both clocks.
    pub fn deadline(self, now: (Micros, tokio::time::Instant)) -> tokio::time::Instant {
        let (us, instant) = now;
        instant.checked_add(self.since(us)).unwrap_or(instant + Duration::from_secs(86_400 * 365))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_follow_the_standard_clock() {
        let (a, std_a) = (Micros::now(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (b, std_b) = (Micros::now(), std::time::Instant::now());
        let ours = b.since(a);
        let theirs = std_b - std_a;
        assert!(ours >= Duration::from_millis(20), "{ours:?}");
        // Read within microseconds of each other, the two clocks agree to well under a millisecond.
        let gap = ours.abs_diff(theirs);
        assert!(gap < Duration::from_millis(1), "ours {ours:?}, std {theirs:?}");
        assert_eq!(a.since(b), Duration::ZERO, "an earlier reading gives zero, not a wrap");
        assert_eq!(a.after(Duration::from_micros(7)).micros_since(a), 7);
        assert_eq!(a.after(Duration::MAX), Micros::from_u64(u64::MAX), "saturates");
        assert_eq!(std::mem::size_of::<Option<Micros>>(), 8);
    }

    #[test]
    fn a_deadline_is_as_far_from_now_on_tokio_s_clock() {
        let now = (Micros::now(), tokio::time::Instant::now());
        let at = now.0.after(Duration::from_millis(1500)).deadline(now);
        assert_eq!(at - now.1, Duration::from_millis(1500));
        let past = Micros::from_u64(now.0.as_u64() - 10).deadline(now);
        assert_eq!(past, now.1, "a reading before now is due now");
    }
}
