//! What every page shares: the frame with navigation and login state,
//! error pages, state bulbs and times.

use crate::caller::Session;
use crate::clock::rfc3339;
use crate::http::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_core::BuildState;
use maud::{html, Markup, DOCTYPE};

const CSS: &str = include_str!("kiln.css");
const JS: &str = include_str!("kiln.js");

pub async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css")], CSS)
}

pub async fn js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript")], JS)
}

/// Who is looking at which page.
pub struct Ctx {
    pub session: Option<Session>,
    pub path: String,
    /// Shown on every page while the data dir's disk is fuller than `[retention] disk_warn`.
    pub disk_warning: Option<String>,
}

pub fn frame(c: &Ctx, title: &str, live: bool, body: Markup) -> Response {
    let nav = [
        ("/", "Console"),
        ("/builders", "Builders"),
        ("/queue", "Queue"),
        ("/packages", "Packages"),
        ("/workers", "Workers"),
        ("/repos", "Repositories"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kiln" }
                link rel="stylesheet" href="/static/kiln.css";
                script src="/static/kiln.js" defer {}
            }
            body data-live=[live.then_some("1")] {
                header.top {
                    a.brand href="/" { "kiln" }
                    nav aria-label="Main" {
                        @for (href, label) in nav {
                            @let current = if href == "/" { c.path == "/" || c.path == "/console" } else { c.path.starts_with(href) };
                            a href=(href) aria-current=[current.then_some("page")] { (label) }
                        }
                    }
                    div.who {
                        @match &c.session {
                            Some(sess) => {
                                span { "Logged in as " (sess.caller.name) }
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(sess.csrf);
                                    button type="submit" { "Log out" }
                                }
                            }
                            None => a href={"/login?next=" (c.path)} { "Log in" },
                        }
                    }
                }
                @if let Some(w) = &c.disk_warning {
                    p.disk-warning role="alert" { "Warning: " (w) }
                }
                main id="main" { (body) }
            }
        }
    };
    let mut r = maud_response(markup);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn maud_response(m: Markup) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

pub fn page_error(title: &str, message: &str) -> axum::response::Html<String> {
    axum::response::Html(page_error_markup(title, message).into_string())
}

pub fn page_error_markup(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" { head { meta charset="utf-8"; title { (title) " · kiln" } link rel="stylesheet" href="/static/kiln.css"; }
        body { main { h1 { (title) } p { (message) } p { a href="/" { "Back to the console" } } } } }
    }
}

/// An error page with the status the API would answer.
pub fn web_error(e: impl Into<ApiError>) -> Response {
    let e = e.into();
    let title = match e.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "The change was refused",
        StatusCode::SERVICE_UNAVAILABLE => "Shutting down",
        _ => "Something went wrong",
    };
    (e.status, page_error(title, &e.message)).into_response()
}

pub fn bulb(state: BuildState) -> &'static str {
    match state {
        BuildState::Succeeded => "ok",
        BuildState::Failed => "bad",
        BuildState::Running => "run",
        BuildState::Queued => "wait",
        BuildState::Cancelled => "cancel",
        BuildState::Skipped => "skip",
    }
}

/// A time as "3 min ago" with the exact time on hover.
pub fn when(us: i64) -> Markup {
    let exact = rfc3339(us);
    let now = crate::clock::now_us();
    let secs = (now - us).max(0) / 1_000_000;
    let rel = match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    };
    html! { time datetime=(exact) title=(exact) { (rel) } }
}

/// How long a running thing has taken so far; the page's script keeps it
/// counting between renders (from the start, relative to the render, so
/// the browser's clock does not matter).
pub fn running_for(start_us: i64, now_us: i64) -> Markup {
    html! {
        time.since datetime=(crate::clock::rfc3339(start_us)) data-start-ms=(start_us / 1000) data-rendered-ms=(now_us / 1000) {
            (duration(Some(start_us), None, now_us))
        }
    }
}

/// How long something took (both times known) or has taken so far, from
/// stored times in microseconds.
pub fn duration(start_us: Option<i64>, end_us: Option<i64>, now_us: i64) -> String {
    match (start_us, end_us) {
        (Some(a), Some(b)) => {
            let ms = (b - a) / 1000;
            if ms < 1000 {
                format!("{ms} ms")
            } else {
                format!("{:.1} s", ms as f64 / 1000.0)
            }
        }
        (Some(a), None) => format!("for {} s", (now_us - a).max(0) / 1_000_000),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_stored_times() {
        assert_eq!(super::duration(Some(1_000_000), Some(1_250_000), 0), "250 ms");
        assert_eq!(super::duration(Some(1_000_000), Some(3_500_000), 0), "2.5 s");
        assert_eq!(super::duration(Some(1_000_000), None, 61_000_000), "for 60 s");
        assert_eq!(super::duration(None, None, 5), "");
    }
}
