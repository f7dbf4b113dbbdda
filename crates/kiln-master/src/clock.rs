//! The master's one clock: wall-clock time as the store keeps it
//! (microseconds since the epoch), as the API shows it (RFC 3339, UTC,
//! always with microseconds, so the strings also sort in time order), and
//! as APT's `Release` files date it.

use jiff::Timestamp;

pub fn now_us() -> i64 {
    Timestamp::now().as_microsecond()
}

pub fn rfc3339(us: i64) -> String {
    match Timestamp::from_microsecond(us) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        Err(_) => us.to_string(),
    }
}

/// Now in APT's date format (`Date:` of a Release), always UTC.
pub fn apt_date() -> String {
    Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S UTC").to_string()
}

/// [`apt_date`] of the time `after` from now (APT's `Valid-Until`).
pub fn apt_date_after(after: std::time::Duration) -> String {
    let later = jiff::SignedDuration::try_from(after).ok().and_then(|d| Timestamp::now().checked_add(d).ok());
    later.unwrap_or(Timestamp::MAX).strftime("%a, %d %b %Y %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_width_utc() {
        assert_eq!(super::rfc3339(1_795_000_000_410_000), "2026-11-18T11:06:40.410000Z");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000Z");
        let apt = super::apt_date();
        assert!(apt.ends_with(" UTC") && apt.contains(", "), "{apt}");
    }
}
