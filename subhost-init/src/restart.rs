//! When a service that ended is started again: the backoff between tries
//! and the limit on tries in a window. Pure arithmetic on monotonic
//! milliseconds, so that it is tested without waiting.

use crate::sys::Millis;

/// The first delay; each failure in a row doubles it up to `BACKOFF_MAX`.
pub const BACKOFF_FIRST: Millis = 1000;
pub const BACKOFF_MAX: Millis = 30_000;
/// More than `LIMIT` restarts within `WINDOW` and the service is failed.
pub const LIMIT: usize = 5;
pub const WINDOW: Millis = 60_000;

/// The delay before try number `streak + 1` of a run of quick failures:
/// 1 s, 2 s, 4 s ... 30 s.
pub fn backoff(streak: u32) -> Millis {
    BACKOFF_FIRST
        .checked_shl(streak)
        .filter(|&d| d <= BACKOFF_MAX)
        .unwrap_or(BACKOFF_MAX)
}

/// The times of the last restarts, oldest first.
#[derive(Default)]
pub struct Window {
    at: [Millis; LIMIT],
    len: usize,
}

impl Window {
    /// Records a restart wanted at `now`; false when it would be more than
    /// `LIMIT` within `WINDOW` (the service is then given up on).
    pub fn allow(&mut self, now: Millis) -> bool {
        let recent = self.at.get(..self.len).unwrap_or_default();
        let keep = recent.iter().filter(|&&t| now.saturating_sub(t) < WINDOW);
        let mut at = [0; LIMIT];
        let mut len = 0;
        for (slot, &t) in at.iter_mut().zip(keep) {
            *slot = t;
            len += 1;
        }
        if len >= LIMIT {
            return false;
        }
        if let Some(slot) = at.get_mut(len) {
            *slot = now;
        }
        self.at = at;
        self.len = len + 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let d: [Millis; 7] = core::array::from_fn(|i| backoff(i as u32));
        assert_eq!(d, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(backoff(64), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn five_restarts_a_minute_then_no_more() {
        let mut w = Window::default();
        for t in [0, 1000, 3000, 7000, 15000] {
            assert!(w.allow(t), "{t}");
        }
        assert!(!w.allow(31_000));
        // Once the first one is a minute old, there is room again.
        let mut w = Window::default();
        for t in [0, 10_000, 20_000, 30_000, 40_000] {
            assert!(w.allow(t));
        }
        assert!(w.allow(60_000));
        assert!(!w.allow(60_001));
    }
}
