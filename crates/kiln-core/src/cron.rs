//! Five-field cron expressions (`minute hour day-of-month month day-of-week`)
//! as schedules use them: `*`, numbers, lists (`1,15`), ranges (`1-5`),
//! steps (`*/15`, `0-30/10`), month and weekday names (`jan`, `mon`), and
//! Sunday as 0 or 7. As in cron, when both day fields are restricted a day
//! matches if either does. Matching is on a civil time the caller gives
//! (in the schedule's time zone); no clock here.

/// A parsed expression: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], first: u32) -> Option<u32> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Some(i as u32 + first);
    }
    s.parse().ok()
}

/// Parses one field into a bit set over `min..=max`.
fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("{what}: bad step {s:?}"))?;
                if step == 0 {
                    return Err(format!("{what}: a step of 0"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(a, names, min).ok_or_else(|| format!("{what}: bad value {a:?}"))?;
            let b = value(b, names, min).ok_or_else(|| format!("{what}: bad value {b:?}"))?;
            (a, b)
        } else {
            let v = value(range, names, min).ok_or_else(|| format!("{what}: bad value {range:?}"))?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{what}: {part:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl CronSpec {
    pub fn parse(text: &str) -> Result<CronSpec, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields[..] else {
            return Err(format!(
                "expected five fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            ));
        };
        let mut weekdays = field(dow, "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(CronSpec {
            minutes: field(m, "minute", 0, 59, &[])?,
            hours: field(h, "hour", 0, 23, &[])? as u32,
            days: field(dom, "day of month", 1, 31, &[])? as u32,
            months: field(mon, "month", 1, 12, &MONTHS)? as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted: dom != "*",
            weekdays_restricted: dow != "*",
        })
    }

    /// Whether the civil time (month 1-12, weekday 0 = Sunday) matches.
    pub fn matches(&self, minute: u32, hour: u32, day: u32, month: u32, weekday: u32) -> bool {
        let bit = |set: u64, v: u32| v < 64 && set & (1 << v) != 0;
        let day_ok = bit(u64::from(self.days), day);
        let weekday_ok = bit(u64::from(self.weekdays), weekday);
        let day_matches = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day_ok || weekday_ok,
            (true, false) => day_ok,
            (false, true) => weekday_ok,
            (false, false) => true,
        };
        bit(self.minutes, minute)
            && bit(u64::from(self.hours), hour)
            && bit(u64::from(self.months), month)
            && day_matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_at_three() {
        let c = CronSpec::parse("0 3 * * *").expect("parse");
        assert!(c.matches(0, 3, 22, 11, 0));
        assert!(!c.matches(1, 3, 22, 11, 0) && !c.matches(0, 4, 22, 11, 0));
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        let c = CronSpec::parse("*/15 9-17 * jan,jul mon-fri").expect("parse");
        assert!(c.matches(45, 17, 5, 7, 5));
        assert!(!c.matches(50, 10, 5, 1, 1), "not a quarter hour");
        assert!(!c.matches(0, 10, 5, 1, 6), "saturday");
        assert!(!c.matches(0, 10, 5, 2, 1), "february");
        let sunday = CronSpec::parse("0 0 * * 7").expect("parse");
        assert!(sunday.matches(0, 0, 1, 1, 0));
        // Both day fields restricted: either matches.
        let either = CronSpec::parse("0 0 1 * mon").expect("parse");
        assert!(either.matches(0, 0, 1, 3, 4) && either.matches(0, 0, 9, 3, 1) && !either.matches(0, 0, 9, 3, 2));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(CronSpec::parse("0 3 * *").expect_err("four").contains("five fields"));
        assert!(CronSpec::parse("60 3 * * *").expect_err("range").contains("minute"));
        assert!(CronSpec::parse("0 3 * foo *").expect_err("name").contains("month: bad value"));
        assert!(CronSpec::parse("*/0 3 * * *").expect_err("step").contains("step of 0"));
        assert!(CronSpec::parse("5-1 * * * *").expect_err("backwards").contains("outside"));
    }
}
