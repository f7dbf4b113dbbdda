//! Wall-clock time as the store keeps it (microseconds since the epoch) and
//! as the API shows it (RFC 3339, UTC, always with microseconds, so the
//! strings also sort in time order).

use time::macros::format_description;
use time::OffsetDateTime;

pub fn now_us() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

pub fn rfc3339(us: i64) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| us.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_width_utc() {
        assert_eq!(super::rfc3339(1_795_000_000_410_000), "2026-11-18T11:06:40.410000Z");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000Z");
    }
}
