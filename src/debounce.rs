//! Waiting for quiet before rendering (`wait = "min:max"`, as in
//! consul-template) and spacing reloads (`min_reload_interval`).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// Render once things were quiet for `min`, never later than `max` after the
/// first change of a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub min: Duration,
    pub max: Duration,
}

impl Wait {
    /// Parses "2s:10s", or "2s" alone (max is then 4 x min, as consul-template).
    pub fn parse(text: &str) -> Result<Wait, String> {
        let (min, max) = match text.split_once(':') {
            Some((a, b)) => (parse_duration(a)?, parse_duration(b)?),
            None => {
                let min = parse_duration(text)?;
                (min, min * 4)
            }
        };
        if max < min {
            return Err(format!("{text:?}: max must not be less than min"));
        }
        Ok(Wait { min, max })
    }
}

/// Parses "500ms", "2s", "1.5s", "1m", "1h", or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like \"500ms\", \"2s\" or \"1m\""))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is out of range"))
}

/// A duration as settings and messages write it: `30s`, `1.5s`.
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}s")
    } else {
        format!("{secs}s")
    }
}

/// Pending work per resource index: when it is due.
#[derive(Debug, Default)]
pub(crate) struct Debouncer {
    pending: BTreeMap<usize, Pending>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    quiet_until: Instant,
    deadline: Instant,
}

impl Debouncer {
    /// Notes a change to resource `i` at `now`. With no wait and no earlier
    /// bound the resource is due at once.
    pub fn touch(
        &mut self,
        i: usize,
        wait: Option<Wait>,
        not_before: Option<Instant>,
        now: Instant,
    ) {
        let (min, max) = wait.map_or((Duration::ZERO, Duration::ZERO), |w| (w.min, w.max));
        let entry = self.pending.entry(i).or_insert(Pending {
            quiet_until: now,
            deadline: now + max,
        });
        entry.quiet_until = now + min;
        // min_reload_interval: neither the quiet period nor the cap may fall earlier.
        if let Some(floor) = not_before {
            entry.quiet_until = entry.quiet_until.max(floor);
            entry.deadline = entry.deadline.max(floor);
        }
    }

    /// When the next resource falls due, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.quiet_until.min(p.deadline))
            .min()
    }

    /// Takes the resources due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let due: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| p.quiet_until.min(p.deadline) <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in &due {
            self.pending.remove(i);
        }
        due
    }

    /// Forgets everything (resources were reloaded and renumbered).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_waits() {
        assert_eq!(
            Wait::parse("2s:10s"),
            Ok(Wait {
                min: Duration::from_secs(2),
                max: Duration::from_secs(10)
            })
        );
        assert_eq!(
            Wait::parse("500ms").map(|w| w.max),
            Ok(Duration::from_secs(2))
        );
        assert!(Wait::parse("10s:2s").is_err());
        assert!(Wait::parse("fast").is_err());
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn quiet_period_and_cap() {
        let t0 = Instant::now();
        let w = Some(Wait {
            min: Duration::from_millis(100),
            max: Duration::from_millis(300),
        });
        let mut d = Debouncer::default();
        d.touch(0, w, None, t0);
        assert_eq!(d.next_due(), Some(t0 + Duration::from_millis(100)));
        // Changes keep coming every 50 ms: quiet never comes, the cap does.
        for k in 1..10 {
            d.touch(0, w, None, t0 + Duration::from_millis(50 * k));
        }
        assert_eq!(d.next_due(), Some(t0 + Duration::from_millis(300)));
        assert!(d.take_due(t0 + Duration::from_millis(299)).is_empty());
        assert_eq!(d.take_due(t0 + Duration::from_millis(300)), [0]);
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn no_wait_is_due_now_unless_spaced() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        d.touch(1, None, None, t0);
        assert_eq!(d.take_due(t0), [1]);
        let later = t0 + Duration::from_secs(5);
        d.touch(1, None, Some(later), t0);
        assert!(d.take_due(t0).is_empty());
        assert_eq!(d.take_due(later), [1]);
    }
}
