//! How much slower a worker answers than it computes (bet 45): after each
//! request it sleeps `(factor - 1) x` the time the request took, so a
//! factor of 10 makes it ten times slower without changing one bit of
//! what it computes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A worker's slowdown schedule over the requests it serves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Throttle {
    /// Full speed.
    None,
    /// Every request `factor` times slower.
    Steady { factor: f64 },
    /// A sawtooth: the factor rises linearly from `from` to `to` over
    /// `period` requests, then starts again, so the worker's speed keeps
    /// changing under the coordinator's timeout estimates.
    Ramp { from: f64, to: f64, period: u64 },
}

impl Throttle {
    /// The slowdown of request number `n` (from 0).
    pub fn factor(&self, n: u64) -> f64 {
        match *self {
            Throttle::None => 1.0,
            Throttle::Steady { factor } => factor,
            Throttle::Ramp { from, to, period } => {
                let phase = (n % period) as f64 / (period.max(2) - 1) as f64;
                from + (to - from) * phase.min(1.0)
            }
        }
    }

    /// How long to sleep after request `n`, which took `took` to compute.
    pub fn delay(&self, n: u64, took: Duration) -> Duration {
        took.mul_f64((self.factor(n) - 1.0).max(0.0))
    }
}

impl fmt::Display for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Throttle::None => write!(f, "none"),
            Throttle::Steady { factor } => write!(f, "steady:{factor}"),
            Throttle::Ramp { from, to, period } => write!(f, "ramp:{from}:{to}:{period}"),
        }
    }
}

impl FromStr for Throttle {
    type Err = String;

    /// `none`, `steady:F` or `ramp:FROM:TO:PERIOD` (factors >= 1, period >= 1).
    fn from_str(s: &str) -> Result<Throttle, String> {
        let bad = || format!("throttle `{s}`: expected `none`, `steady:F` or `ramp:FROM:TO:PERIOD` with factors >= 1");
        let factor = |v: &str| v.parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 1.0).ok_or_else(bad);
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["none"] => Ok(Throttle::None),
            ["steady", f] => Ok(Throttle::Steady { factor: factor(f)? }),
            ["ramp", a, b, p] => Ok(Throttle::Ramp {
                from: factor(a)?,
                to: factor(b)?,
                period: p.parse().ok().filter(|p| *p >= 1).ok_or_else(bad)?,
            }),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_print_and_slow_down_as_declared() {
        for s in ["none", "steady:10", "ramp:1:10:4"] {
            assert_eq!(s.parse::<Throttle>().unwrap().to_string(), s);
        }
        let ramp: Throttle = "ramp:1:10:4".parse().unwrap();
        let f: Vec<f64> = (0..6).map(|n| ramp.factor(n)).collect();
        assert_eq!(f, [1.0, 4.0, 7.0, 10.0, 1.0, 4.0]);
        let steady: Throttle = "steady:10".parse().unwrap();
        assert_eq!(steady.delay(3, Duration::from_millis(5)), Duration::from_millis(45));
        assert_eq!(Throttle::None.delay(0, Duration::from_secs(1)), Duration::ZERO);
        for bad in ["", "steady", "steady:0.5", "ramp:1:2", "ramp:1:2:0", "fast"] {
            assert!(bad.parse::<Throttle>().is_err(), "{bad}");
        }
    }
}
