//! Points in time as operators write them: `2027-01-15` (midnight UTC),
//! `2027-01-15T12:00:00Z`, or a span from now such as `400d`.

/// Unix seconds of `text`: a date (`YYYY-MM-DD`, midnight UTC) or a UTC
/// time (`YYYY-MM-DDTHH:MM[:SS]Z`, a space allowed for the `T`).
pub fn parse_date(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a date like 2027-01-15 or 2027-01-15T12:00:00Z");
    let (day, time) = match text.find(['T', ' ']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let mut parts = day.split('-');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let number = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (number(y)?, number(m)?, number(d)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err(bad());
    }
    let mut secs = days_since_epoch(y, m, d) * 86400;
    if let Some(time) = time {
        let time = time.strip_suffix('Z').ok_or_else(|| format!("{text:?}: give the time in UTC, ending in Z"))?;
        let fields: Vec<&str> = time.split(':').collect();
        if !(2..=3).contains(&fields.len()) || fields.iter().any(|f| f.len() != 2) {
            return Err(bad());
        }
        let (h, min) = (number(fields[0])?, number(fields[1])?);
        let s = fields.get(2).map(|s| number(s)).transpose()?.unwrap_or(0);
        if h > 23 || min > 59 || s > 59 {
            return Err(bad());
        }
        secs += u64::from(h) * 3600 + u64::from(min) * 60 + u64::from(s);
    }
    Ok(secs)
}

/// Unix seconds of `text` as a date ([`parse_date`]) or as a span after
/// `now` (`400d`, `2h`: [`crate::duration::parse_duration`]).
pub fn parse_date_or_span(text: &str, now: u64) -> Result<u64, String> {
    parse_date(text).or_else(|date_err| match crate::duration::parse_duration(text) {
        Ok(span) => Ok(now.saturating_add(span.as_secs())),
        Err(_) => Err(format!("{date_err}, nor a span from now like 400d")),
    })
}

/// `YYYY-MM-DD HH:MM UTC` of Unix seconds `at`.
pub fn format_utc(at: u64) -> String {
    // 9999-12-31 23:59:59: later times (a corrupt value) are shown as that.
    let at = at.min(253_402_300_799);
    let (days, rest) = (at / 86400, at % 86400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date (1970 or later), counting whole
/// years, then whole months of the last year.
fn days_since_epoch(y: u32, m: u32, d: u32) -> u64 {
    let years: u64 = (1970..y).map(|yy| if is_leap(yy) { 366 } else { 365 }).sum();
    let months: u64 = (1..m).map(|mm| u64::from(days_in_month(y, mm))).sum();
    years + months + u64::from(d - 1)
}

fn civil_from_days(mut days: u64) -> (u32, u32, u32) {
    let mut y = 1970;
    loop {
        let len = if is_leap(y) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        y += 1;
    }
    let mut m = 1;
    while days >= u64::from(days_in_month(y, m)) {
        days -= u64::from(days_in_month(y, m));
        m += 1;
    }
    (y, m, days as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_in_utc() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        // As `date -u -d 2027-01-15 +%s` gives it.
        assert_eq!(parse_date("2027-01-15"), Ok(1_799_971_200));
        assert_eq!(parse_date("2027-01-15T12:30:00Z"), Ok(1_799_971_200 + 12 * 3600 + 30 * 60));
        assert_eq!(parse_date("2028-02-29 00:01Z"), Ok(1_835_395_200 + 60));
        assert_eq!(format_utc(1_835_395_260), "2028-02-29 00:01 UTC");
        for bad in ["2027-02-29", "2027-13-01", "27-01-15", "2027-01-15T25:00:00Z", "soon", "2027-01-15T12:00"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert!(parse_date("2027-01-15T12:00").expect_err("no zone").contains("UTC"));
    }

    #[test]
    fn a_span_counts_from_now() {
        assert_eq!(parse_date_or_span("30d", 1000), Ok(1000 + 30 * 86400));
        assert_eq!(parse_date_or_span("2027-01-15", 1000), Ok(1_799_971_200));
        assert!(parse_date_or_span("later", 0).expect_err("neither").contains("span from now"));
    }
}
