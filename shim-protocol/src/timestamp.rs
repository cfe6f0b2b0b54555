//! Conversions between [`SystemTime`] and `google.protobuf.Timestamp`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protobuf::well_known_types::timestamp::Timestamp;

/// Nanoseconds in one second, the exclusive bound of `Timestamp.nanos`.
const NANOS_PER_SECOND: u32 = 1_000_000_000;

/// Why a `Timestamp` does not name a representable [`SystemTime`].
#[derive(Debug, thiserror::Error)]
pub enum TimestampError {
    /// `nanos` lies outside `0..1_000_000_000`, which the protobuf spec forbids.
    #[error("timestamp nanos {nanos} outside 0..1000000000")]
    NanosOutOfRange {
        /// The offending value.
        nanos: i32,
    },
    /// The instant lies beyond what this platform's `SystemTime` holds (not on Linux, whose
    /// `SystemTime` spans every `i64` second).
    #[error("timestamp {seconds}s {nanos}ns does not fit in SystemTime")]
    Overflow {
        /// Seconds since the epoch.
        seconds: i64,
        /// Nanoseconds within the second.
        nanos: i32,
    },
}

/// The current time as a `Timestamp`.
pub fn now() -> Timestamp {
    to_timestamp(SystemTime::now())
}

/// Converts `time` to a normalised `Timestamp` (`nanos` always in `0..1e9`, also before 1970).
///
/// Times more than `i64::MAX` seconds from the epoch saturate; no real clock reaches them.
pub fn to_timestamp(time: SystemTime) -> Timestamp {
    let (seconds, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_nanos(),
        ),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).map_or(i64::MIN, |s| -s);
            // Protobuf keeps nanos non-negative: -1.25s is -2s + 0.75s.
            match before.subsec_nanos() {
                0 => (whole, 0),
                sub => (whole.saturating_sub(1), NANOS_PER_SECOND - sub),
            }
        }
    };
    let mut timestamp = Timestamp::new();
    timestamp.seconds = seconds;
    // nanos < 1e9 < i32::MAX, so this conversion never fails.
    timestamp.nanos = i32::try_from(nanos).unwrap_or(0);
    timestamp
}

/// Converts a `Timestamp` back to a [`SystemTime`].
///
/// # Errors
/// [`TimestampError::NanosOutOfRange`] for an unnormalised `nanos`,
/// [`TimestampError::Overflow`] if the instant is out of `SystemTime`'s range.
pub fn from_timestamp(timestamp: &Timestamp) -> Result<SystemTime, TimestampError> {
    let (seconds, nanos) = (timestamp.seconds, timestamp.nanos);
    let sub = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < NANOS_PER_SECOND)
        .ok_or(TimestampError::NanosOutOfRange { nanos })?;
    let whole = Duration::from_secs(seconds.unsigned_abs());
    let base = if seconds >= 0 {
        UNIX_EPOCH.checked_add(whole)
    } else {
        UNIX_EPOCH.checked_sub(whole)
    };
    base.and_then(|t| t.checked_add(Duration::from_nanos(u64::from(sub))))
        .ok_or(TimestampError::Overflow { seconds, nanos })
}

/// `2026-12-03T18:05:00.123456789Z`: `time` in UTC as RFC 3339 with nanoseconds, as containerd
/// logs and `ctr events` print times (no date crate needed for one format).
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): Howard Hinnant's
/// `civil_from_days`, for days ≥ 0.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        let mut t = Timestamp::new();
        t.seconds = seconds;
        t.nanos = nanos;
        t
    }

    #[test]
    fn after_epoch_round_trips() {
        let time = UNIX_EPOCH + Duration::new(1_700_000_123, 456_789);
        let t = to_timestamp(time);
        assert_eq!((t.seconds, t.nanos), (1_700_000_123, 456_789));
        assert_eq!(from_timestamp(&t).unwrap(), time);
    }

    #[test]
    fn before_epoch_is_normalised() {
        let time = UNIX_EPOCH - Duration::new(1, 250_000_000);
        let t = to_timestamp(time);
        assert_eq!((t.seconds, t.nanos), (-2, 750_000_000));
        assert_eq!(from_timestamp(&t).unwrap(), time);
        let whole = to_timestamp(UNIX_EPOCH - Duration::from_secs(3));
        assert_eq!((whole.seconds, whole.nanos), (-3, 0));
    }

    #[test]
    fn epoch_is_zero() {
        assert_eq!(to_timestamp(UNIX_EPOCH), ts(0, 0));
        assert_eq!(from_timestamp(&ts(0, 0)).unwrap(), UNIX_EPOCH);
    }

    #[test]
    fn rejects_unnormalised_nanos() {
        for nanos in [-1, 1_000_000_000] {
            assert!(matches!(
                from_timestamp(&ts(5, nanos)),
                Err(TimestampError::NanosOutOfRange { nanos: n }) if n == nanos
            ));
        }
    }

    #[test]
    fn extreme_instants_round_trip() {
        // Linux's SystemTime spans the whole i64 second range, so nothing here overflows.
        for seconds in [i64::MAX, i64::MIN] {
            let time = from_timestamp(&ts(seconds, 0)).unwrap();
            assert_eq!(to_timestamp(time), ts(seconds, 0));
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now().seconds > 1_577_836_800);
    }

    #[test]
    fn rfc3339_is_utc_with_nanoseconds() {
        let at = |secs, nanos| UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        // Leap days, one of a century leap year.
        assert_eq!(
            rfc3339(at(951_782_400, 5)),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(
            rfc3339(at(1_709_210_096, 500_000_000)),
            "2024-02-29T12:34:56.500000000Z"
        );
        assert_eq!(
            rfc3339(at(1_798_761_599, 0)),
            "2026-12-31T23:59:59.000000000Z"
        );
    }
}
