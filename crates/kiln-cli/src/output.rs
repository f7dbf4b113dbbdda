//! Human output: tables and durations.

use kiln_proto::api::Build;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Seconds from `start` to `end` (or now).
pub fn elapsed(start: Option<&str>, end: Option<&str>) -> Option<f64> {
    let start = parse_time(start?)?;
    let end = end.and_then(parse_time).unwrap_or_else(OffsetDateTime::now_utc);
    Some((end - start).as_seconds_f64().max(0.0))
}

pub fn human_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

/// What a build is doing, in words: the running step, "publishing" once every
/// step is done but the build is not (its packages are being published), or
/// what a queued build waits for.
pub fn activity(b: &Build, all: &[Build]) -> String {
    match b.state {
        kiln_core::BuildState::Running => {
            if !b.steps.is_empty() && b.steps.iter().all(|s| s.state.is_finished()) {
                "publishing".into()
            } else {
                current_step(b).map(|s| format!("step {s}")).unwrap_or_default()
            }
        }
        kiln_core::BuildState::Queued => {
            let waiting: Vec<String> = b
                .depends_on
                .iter()
                .filter_map(|d| all.iter().find(|x| x.id == *d))
                .filter(|d| !d.state.is_finished())
                .map(|d| format!("{}@{}", d.component, d.target))
                .collect();
            if waiting.is_empty() {
                String::new()
            } else {
                format!("waits for {}", waiting.join(", "))
            }
        }
        _ => String::new(),
    }
}

/// The step running now, or the last one that ran.
pub fn current_step(b: &Build) -> Option<&str> {
    b.steps
        .iter()
        .find(|s| s.state == kiln_core::StepState::Running)
        .or_else(|| b.steps.iter().rev().find(|s| s.started_at.is_some()))
        .map(|s| s.name.as_str())
}

pub fn build_line(b: &Build) -> String {
    let dur = elapsed(b.started_at.as_deref(), b.finished_at.as_deref()).map(human_secs).unwrap_or_else(|| "-".into());
    let step = if b.state == kiln_core::BuildState::Running { current_step(b).unwrap_or("-") } else { "" };
    let mut line = format!(
        "#{:<6} {:<10} {:<24} {:<20} {:<8} {:>8}",
        b.id,
        b.state.as_str(),
        b.component,
        b.target,
        b.worker.as_deref().unwrap_or("-"),
        dur
    );
    if !step.is_empty() {
        line.push_str(&format!("  step {step}"));
    }
    if let Some(w) = b.waiting.as_ref().filter(|_| b.state == kiln_core::BuildState::Queued) {
        line.push_str(&format!("  waits: {}", w.kind()));
    }
    if let Some(r) = &b.reason {
        if b.state.is_finished() && b.state != kiln_core::BuildState::Succeeded {
            line.push_str(&format!("  ({r})"));
        }
    }
    line
}

pub fn header() -> String {
    format!("{:<7} {:<10} {:<24} {:<20} {:<8} {:>8}", "ID", "STATE", "COMPONENT", "TARGET", "WORKER", "TIME")
}

/// Text from a build (a log line, a worker's reason) made safe to print on
/// the user's terminal: no control characters (escape sequences, carriage
/// returns) and no invisible format characters (bidirectional overrides)
/// that would make it show other than it reads; newlines and tabs stay.
pub fn terminal_safe(text: &str) -> String {
    text.chars()
        .filter(|c| {
            matches!(c, '\n' | '\t')
                || !(c.is_control()
                    || matches!(*c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn build_text_cannot_drive_the_terminal() {
        let hostile = "ok\x1b]0;owned\x07 \x1b[2Jdone\r\u{9b}31m\u{202e}txt.exe\tend\n";
        assert_eq!(super::terminal_safe(hostile), "ok]0;owned [2Jdone31mtxt.exe\tend\n");
    }
}
