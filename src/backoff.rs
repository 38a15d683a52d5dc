//! Exponential back-off with a cap and jitter.

use std::time::Duration;

/// Doubling delays from `initial` up to `max`, each with up to 10% jitter so that many
/// agents restarted together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A back-off starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay to wait (without jitter it would be initial, 2×initial, … max).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        base + jitter(base / 10)
    }

    /// The delay without jitter that the next call will be based on.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// Starts over from the initial delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A pseudo-random duration in `[0, max]`. Good enough for jitter; not for security.
fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 step: spreads the clock's low bits.
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    Duration::from_nanos(x % (nanos + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut bases = Vec::new();
        for _ in 0..7 {
            bases.push(backoff.peek().as_secs());
            let delay = backoff.next_delay();
            let base = Duration::from_secs(*bases.last().unwrap());
            assert!(
                delay >= base && delay <= base + base / 10,
                "{delay:?} vs {base:?}"
            );
        }
        assert_eq!(bases, vec![1, 2, 4, 8, 16, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.peek(), Duration::from_secs(1));
    }
}
