//! The parts of the config about what starts builds and who hears about
//! them: git and Mercurial sources, change hooks (`[hooks.*]`), and notifiers
//! (`[[notify]]`, with `[smtp]` and `[irc]` for mail and chat).

use crate::channel::SecretRef;
use crate::duration::parse_duration;
use crate::names::check_name;
use crate::state::BuildState;
use crate::toml_reader::{Reader, Span, Tbl};
use std::time::Duration;

/// Which version control system a repository is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vcs {
    Git,
    /// Mercurial (`hg`), as the OpenPanel team keeps its components.
    Hg,
}

impl Vcs {
    pub fn as_str(self) -> &'static str {
        match self {
            Vcs::Git => "git",
            Vcs::Hg => "hg",
        }
    }
}

/// A component's source in a git or Mercurial repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcsSource {
    pub vcs: Vcs,
    /// Clone URL (git: `https://`, `http://`, `git://`, `ssh://`, `file://`
    /// or `user@host:path`; Mercurial: `https://`, `http://`, `ssh://`, `file://`).
    pub url: String,
    /// The branch built when a build names no revision, and the one whose
    /// pushes start builds.
    pub branch: String,
    /// The component's tree inside the repository (a monorepo); the whole
    /// repository when absent.
    pub subdir: Option<String>,
    /// Check submodules out too (recursively; git only).
    pub submodules: bool,
    /// Which changed files concern this component (globs); when empty, any
    /// file under `subdir` (or any file at all).
    pub paths: Vec<crate::glob::Pattern>,
    /// Poll the branch at this interval (for hosts that cannot send hooks).
    pub poll: Option<Duration>,
}

/// Change hooks: where forges post push events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hooks {
    /// `[hooks.base] open = true`: the base hook takes requests without a
    /// token (for trusted networks only); otherwise it needs one with own_jobs.
    pub base_open: bool,
    pub github: Option<ForgeHook>,
    pub gitlab: Option<ForgeHook>,
    pub gitea: Option<ForgeHook>,
}

/// One forge's hook: the secret its deliveries are checked with and, when a
/// token is given, where commit statuses go back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeHook {
    /// GitHub and Gitea sign the body with it (HMAC-SHA256); GitLab sends it
    /// as `X-Gitlab-Token`.
    pub secret: SecretRef,
    /// API token for commit statuses; none means no statuses are posted.
    pub status_token: Option<SecretRef>,
    /// The forge's API base (GitHub: `https://api.github.com`; GitLab and
    /// Gitea: the instance's address).
    pub api_url: Option<String>,
    /// Test-build pull (merge) requests: opened, reopened and updated.
    pub pull_requests: bool,
    /// Test-build pull requests from forks too (without the component's
    /// secrets: their code is nobody's on this farm).
    pub forks: bool,
    /// Text in a head commit's message (or a pull request's title) that
    /// makes a push or pull request build nothing; compared without case.
    pub skip_markers: Vec<String>,
    /// A pull request comment holding this phrase rebuilds its latest test
    /// builds, when the forge says the commenter may write to the
    /// repository or the commenter is in `rebuild_by`.
    pub rebuild_phrase: String,
    /// Forge logins whose comments may ask for a rebuild (GitLab and Gitea
    /// do not say in the payload what a commenter may do).
    pub rebuild_by: Vec<String>,
}

/// The phrase that asks for a rebuild when a hook names none.
pub const DEFAULT_REBUILD_PHRASE: &str = "kiln rebuild";

/// How the master sends mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    pub server: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// `From:` of every mail, e.g. `kiln <kiln@example.org>`.
    pub from: String,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// PEM file of the certificate authorities that vouch for the server
    /// (a relay with a private CA); the public web roots when absent.
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// STARTTLS, refusing a server that does not offer it (the default).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text: only for a relay on the same machine or loopback.
    None,
}

/// The chat bot: one connection to an IRC server, in the channels its
/// notifiers name; it answers `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irc {
    /// `host:port`.
    pub server: String,
    pub tls: bool,
    pub nick: String,
    pub password: Option<SecretRef>,
    /// Channels joined besides those notifiers name.
    pub channels: Vec<String>,
}

/// Where a notifier reports, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    pub name: String,
    /// Final states that are reported (default: failed).
    pub on: Vec<BuildState>,
    /// Also report a success that follows a failure of the same builder.
    pub fixed: bool,
    /// Components reported; empty means all.
    pub components: Vec<String>,
    pub via: NotifyVia,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyVia {
    /// A JSON POST, signed (`X-Kiln-Signature-256: sha256=HMAC`) when there is a secret file.
    Webhook { url: String, secret_file: Option<String> },
    /// Mail to these addresses and, when `requester`, to whoever asked for the build.
    Email { to: Vec<String>, requester: bool },
    /// A message in an IRC channel.
    Irc { channel: String },
}

impl Notifier {
    /// Whether a build that ended in `state`, after a previous build of the
    /// same builder that ended in `previous`, is reported.
    pub fn wants(&self, component: &str, state: BuildState, previous: Option<BuildState>) -> bool {
        if !self.components.is_empty() && !self.components.iter().any(|c| c == component) {
            return false;
        }
        self.on.contains(&state)
            || (self.fixed && state == BuildState::Succeeded && previous == Some(BuildState::Failed))
    }
}

pub(super) const HOOK_KEYS: &[&str] = &["base", "github", "gitlab", "gitea"];
const FORGE_HOOK_KEYS: &[&str] = &[
    "secret_file",
    "secret",
    "status_token_file",
    "status_token",
    "api_url",
    "pull_requests",
    "forks",
    "skip_markers",
    "rebuild_phrase",
    "rebuild_by",
];
const SMTP_KEYS: &[&str] = &["server", "port", "security", "from", "username", "password", "ca_file"];
const IRC_KEYS: &[&str] = &["server", "tls", "nick", "password", "channels"];
pub(super) const NOTIFY_KEYS: &[&str] =
    &["name", "on", "components", "webhook", "secret_file", "email", "email_requester", "irc"];
pub(super) const GIT_SOURCE_KEYS: &[&str] = &["git", "branch", "subdir", "submodules", "paths", "poll"];
pub(super) const HG_SOURCE_KEYS: &[&str] = &["hg", "branch", "subdir", "paths", "poll"];

/// Whether `url` is a git URL kiln hands to `git` (never an option, never
/// a transport helper like `ext::`).
pub fn check_git_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.starts_with('-') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a URL without spaces that does not start with '-'".into());
    }
    const SCHEMES: &[&str] = &["https://", "http://", "git://", "ssh://", "file://"];
    if SCHEMES.iter().any(|s| url.starts_with(s) && url.len() > s.len()) {
        return Ok(());
    }
    // scp-like `user@host:path`: a colon before any slash, and no `::` (transport helpers).
    if let Some((host, path)) = url.split_once(':') {
        if !host.is_empty() && !host.contains('/') && !path.starts_with([':', '/']) && !path.is_empty() {
            return Ok(());
        }
    }
    Err("must be an https://, http://, git://, ssh:// or file:// URL, or user@host:path".into())
}

/// Whether `url` is a Mercurial URL kiln hands to `hg`: a scheme hg
/// speaks natively, never an option.
pub fn check_hg_url(url: &str) -> Result<(), String> {
    const SCHEMES: &[&str] = &["https://", "http://", "ssh://", "file://"];
    let ok = !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && SCHEMES.iter().any(|s| url.starts_with(s) && url.len() > s.len());
    if ok {
        Ok(())
    } else {
        Err("must be an https://, http://, ssh:// or file:// URL without spaces".into())
    }
}

/// Whether `url` is a URL `vcs` may be handed.
pub fn check_vcs_url(vcs: Vcs, url: &str) -> Result<(), String> {
    match vcs {
        Vcs::Git => check_git_url(url),
        Vcs::Hg => check_hg_url(url),
    }
}

/// Whether `name` can be a branch kiln passes to git (or Mercurial).
pub fn check_branch(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("@{")
        || name.contains("//")
        || name.chars().any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        Err(format!("{name:?} is not a valid branch name"))
    } else {
        Ok(())
    }
}

/// Whether `rev` is a commit id (hex, 7 to 64 digits).
pub fn check_revision(rev: &str) -> Result<(), String> {
    if (7..=64).contains(&rev.len()) && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("{rev:?} is not a commit id (7 to 64 hex digits)"))
    }
}

pub(super) fn read_vcs_source(r: &mut Reader<'_>, st: Tbl<'_>, what: &str, vcs: Vcs) -> Option<VcsSource> {
    let keys = if vcs == Vcs::Git { GIT_SOURCE_KEYS } else { HG_SOURCE_KEYS };
    r.check_keys(st, keys, &format!("the source of {what}"));
    let (url, uspan) = r.string(st, vcs.as_str(), what)?;
    let mut ok = true;
    if let Err(e) = check_vcs_url(vcs, &url) {
        r.err(&uspan, format!("`{}` of {what} {e}", vcs.as_str()));
        ok = false;
    }
    let branch = match r.string(st, "branch", what) {
        Some((b, bspan)) => {
            if let Err(e) = check_branch(&b) {
                r.err(&bspan, format!("`branch` of {what}: {e}"));
                ok = false;
            }
            b
        }
        None if vcs == Vcs::Hg => "default".to_string(),
        None => "main".to_string(),
    };
    let subdir = r.string(st, "subdir", what).and_then(|(s, sspan)| {
        let s = s.trim_end_matches('/').to_string();
        if s.is_empty() || s.starts_with('/') || s.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            r.err(&sspan, format!("`subdir` of {what} must be a relative path inside the repository"));
            ok = false;
            None
        } else {
            Some(s)
        }
    });
    let submodules = r.boolean(st, "submodules", what).unwrap_or(false);
    let mut paths = Vec::new();
    for (p, pspan) in r.string_list(st, "paths", what).unwrap_or_default() {
        match crate::glob::Pattern::new(&p) {
            Ok(pat) => paths.push(pat),
            Err(e) => {
                r.err(&pspan, format!("`paths` of {what}: {p:?}: {e}"));
                ok = false;
            }
        }
    }
    let poll = match st.t.get("poll") {
        None => None,
        Some(item) => {
            let pspan = item.span();
            match item.as_str().map(parse_duration) {
                Some(Ok(d)) if d >= Duration::from_secs(10) => Some(d),
                _ => {
                    r.err(&pspan, format!("`poll` of {what} must be an interval of at least 10s, like \"5m\""));
                    ok = false;
                    None
                }
            }
        }
    };
    ok.then_some(VcsSource { vcs, url, branch, subdir, submodules, paths, poll })
}

/// A secret given either as `KEY_file = "path"` or as `KEY = { file | env | credential }`.
pub(super) fn read_secret(r: &mut Reader<'_>, tbl: Tbl<'_>, key: &str, what: &str) -> Option<SecretRef> {
    let file_key = format!("{key}_file");
    let short = r.string(tbl, &file_key, what).map(|(f, _)| SecretRef::File(f));
    let Some(item) = tbl.t.get(key) else { return short };
    let span = item.span();
    if short.is_some() {
        r.err(&span, format!("{what} has both `{file_key}` and `{key}`; keep one"));
        return None;
    }
    if item.as_str().is_some() {
        r.err(&span, format!("`{key}` of {what} must be a table like {{ file = \"secrets/x\" }} or {{ env = \"VAR\" }}: the {key} itself never goes in the config"));
        return None;
    }
    let Some(t) = item.as_table_like() else {
        r.err(&span, format!("`{key}` of {what} must be a table like {{ file = \"secrets/x\" }}, {{ env = \"VAR\" }} or {{ credential = \"NAME\" }}"));
        return None;
    };
    let st = Tbl { t, span: &span };
    r.check_keys(st, &["file", "env", "credential"], &format!("`{key}` of {what}"));
    let mut refs = Vec::new();
    if let Some((f, _)) = r.string(st, "file", what) {
        refs.push(SecretRef::File(f));
    }
    if let Some((e, _)) = r.string(st, "env", what) {
        refs.push(SecretRef::Env(e));
    }
    if let Some((c, cspan)) = r.string(st, "credential", what) {
        if check_name(&c).is_err() {
            r.err(&cspan, format!("`{key}.credential` of {what} must be a plain name"));
        }
        refs.push(SecretRef::Credential(c));
    }
    if refs.len() != 1 {
        r.err(&span, format!("`{key}` of {what} needs exactly one of `file`, `env`, `credential`"));
        return None;
    }
    refs.pop()
}

/// A component's `secrets = { VAR = { file = "..." }, ... }`: environment
/// variables its steps get, their values masked in logs.
pub(super) fn read_step_secrets(
    r: &mut Reader<'_>,
    tbl: Tbl<'_>,
    what: &str,
) -> std::collections::BTreeMap<String, SecretRef> {
    let mut out = std::collections::BTreeMap::new();
    let Some(item) = tbl.t.get("secrets") else { return out };
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(
            &span,
            format!("`secrets` of {what} must be a table like {{ API_TOKEN = {{ file = \"secrets/api.token\" }} }}"),
        );
        return out;
    };
    let st = Tbl { t, span: &span };
    let names: Vec<(String, Span)> = t.iter().map(|(k, v)| (k.to_string(), v.span())).collect();
    for (name, nspan) in names {
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !name.starts_with("KILN_");
        if !ok {
            r.err(
                &nspan,
                format!("`secrets` of {what}: {name:?} is not an environment variable name (A-Z, 0-9, _; not KILN_*)"),
            );
            continue;
        }
        if let Some(s) = read_secret(r, st, &name, &format!("secret {name} of {what}")) {
            out.insert(name, s);
        }
    }
    out
}

fn http_url(r: &mut Reader<'_>, tbl: Tbl<'_>, key: &str, what: &str) -> Option<String> {
    let (u, uspan) = r.string(tbl, key, what)?;
    if (u.starts_with("http://") || u.starts_with("https://")) && !u.chars().any(char::is_whitespace) {
        Some(u)
    } else {
        r.err(&uspan, format!("`{key}` of {what} must be an http:// or https:// URL"));
        None
    }
}

pub(super) fn read_hooks(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Hooks {
    let mut hooks = Hooks::default();
    let Some(item) = item else { return hooks };
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, "`hooks` must be a table, like [hooks.github]");
        return hooks;
    };
    r.check_keys(Tbl { t, span: &span }, HOOK_KEYS, "[hooks]");
    if let Some(bitem) = t.get("base") {
        let bspan = bitem.span();
        match bitem.as_table_like() {
            Some(bt) => {
                let tbl = Tbl { t: bt, span: &bspan };
                r.check_keys(tbl, &["open"], "[hooks.base]");
                hooks.base_open = r.boolean(tbl, "open", "[hooks.base]").unwrap_or(false);
            }
            None => r.err(&bspan, "[hooks.base] must be a table"),
        }
    }
    for forge in ["github", "gitlab", "gitea"] {
        let Some(fitem) = t.get(forge) else { continue };
        let fspan = fitem.span();
        let Some(ft) = fitem.as_table_like() else {
            r.err(&fspan, format!("[hooks.{forge}] must be a table"));
            continue;
        };
        let what = format!("[hooks.{forge}]");
        let tbl = Tbl { t: ft, span: &fspan };
        r.check_keys(tbl, FORGE_HOOK_KEYS, &what);
        let secret = read_secret(r, tbl, "secret", &what);
        if secret.is_none() && ft.get("secret").is_none() {
            r.err(&fspan, format!("{what} needs `secret_file` (deliveries are checked with it)"));
        }
        let status_token = read_secret(r, tbl, "status_token", &what);
        // A base the API paths are appended to.
        let api_url = http_url(r, tbl, "api_url", &what).map(|u| u.trim_end_matches('/').to_string());
        if status_token.is_some() && api_url.is_none() && forge != "github" {
            r.err(&fspan, format!("{what} has a `status_token` but no `api_url` (the instance's address)"));
        }
        let pull_requests = r.boolean(tbl, "pull_requests", &what).unwrap_or(false);
        let forks = r.boolean(tbl, "forks", &what).unwrap_or(false);
        if forks && !pull_requests {
            r.err(&fspan, format!("{what} has `forks = true` but not `pull_requests = true`"));
        }
        let skip_markers = match r.string_list(tbl, "skip_markers", &what) {
            Some(list) => list.into_iter().map(|(m, _)| m).filter(|m| !m.trim().is_empty()).collect(),
            None => crate::change::DEFAULT_SKIP_MARKERS.iter().map(|m| m.to_string()).collect(),
        };
        let rebuild_phrase = match r.string(tbl, "rebuild_phrase", &what) {
            Some((p, pspan)) if p.trim().is_empty() => {
                r.err(&pspan, format!("`rebuild_phrase` of {what} is empty; every comment would rebuild"));
                continue;
            }
            Some((p, _)) => p.trim().to_string(),
            None => DEFAULT_REBUILD_PHRASE.to_string(),
        };
        let rebuild_by =
            r.string_list(tbl, "rebuild_by", &what).unwrap_or_default().into_iter().map(|(l, _)| l).collect();
        let Some(secret) = secret else { continue };
        let hook =
            ForgeHook { secret, status_token, api_url, pull_requests, forks, skip_markers, rebuild_phrase, rebuild_by };
        match forge {
            "github" => hooks.github = Some(hook),
            "gitlab" => hooks.gitlab = Some(hook),
            _ => hooks.gitea = Some(hook),
        }
    }
    hooks
}

pub(super) fn read_smtp(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Option<Smtp> {
    let item = item?;
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, "[smtp] must be a table");
        return None;
    };
    let tbl = Tbl { t, span: &span };
    r.check_keys(tbl, SMTP_KEYS, "[smtp]");
    let server = r.required_string(tbl, "server", "[smtp]").map(|s| s.0);
    let security = match r.string(tbl, "security", "[smtp]") {
        None => Some(SmtpSecurity::Starttls),
        Some((s, sspan)) => match s.as_str() {
            "starttls" => Some(SmtpSecurity::Starttls),
            "tls" => Some(SmtpSecurity::Tls),
            "none" => Some(SmtpSecurity::None),
            other => {
                r.err(&sspan, format!("`security` of [smtp] is {other:?}; one of starttls, tls, none"));
                None
            }
        },
    };
    let port = match t.get("port") {
        None => Some(match security {
            Some(SmtpSecurity::Tls) => 465,
            _ => 587,
        }),
        Some(p) => match p.as_integer().and_then(|i| u16::try_from(i).ok()).filter(|p| *p > 0) {
            Some(p) => Some(p),
            None => {
                r.err(&p.span(), "`port` of [smtp] must be a port number");
                None
            }
        },
    };
    let from = r.required_string(tbl, "from", "[smtp]").and_then(|(f, fspan)| {
        if f.contains('@') && !f.contains(['\r', '\n']) {
            Some(f)
        } else {
            r.err(&fspan, "`from` of [smtp] must be a mail address, like \"kiln <kiln@example.org>\"");
            None
        }
    });
    let username = r.string(tbl, "username", "[smtp]").map(|u| u.0);
    let password = read_secret(r, tbl, "password", "[smtp]");
    if password.is_some() != username.is_some() {
        r.err(&span, "[smtp] needs both `username` and `password` (or neither)");
    }
    let ca_file = r.string(tbl, "ca_file", "[smtp]").map(|c| c.0);
    Some(Smtp { server: server?, port: port?, security: security?, from: from?, username, password, ca_file })
}

fn check_irc_channel(c: &str) -> bool {
    c.len() > 1
        && c.len() <= 50
        && (c.starts_with('#') || c.starts_with('&'))
        && !c.chars().any(|ch| ch.is_whitespace() || ch.is_control() || ch == ',')
}

pub(super) fn read_irc(r: &mut Reader<'_>, item: Option<&toml_edit::Item>) -> Option<Irc> {
    let item = item?;
    let span = item.span();
    let Some(t) = item.as_table_like() else {
        r.err(&span, "[irc] must be a table");
        return None;
    };
    let tbl = Tbl { t, span: &span };
    r.check_keys(tbl, IRC_KEYS, "[irc]");
    let server = r.required_string(tbl, "server", "[irc]").and_then(|(s, sspan)| {
        let ok = s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if ok {
            Some(s)
        } else {
            r.err(&sspan, "`server` of [irc] must be host:port, like \"irc.example.org:6697\"");
            None
        }
    });
    let tls = r.boolean(tbl, "tls", "[irc]").unwrap_or(false);
    let nick = match r.string(tbl, "nick", "[irc]") {
        None => Some("kiln".to_string()),
        Some((n, nspan)) => {
            let ok = !n.is_empty()
                && n.len() <= 30
                && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_[]\\`^{}|".contains(c))
                && !n.starts_with(|c: char| c.is_ascii_digit() || c == '-');
            if ok {
                Some(n)
            } else {
                r.err(&nspan, "`nick` of [irc] is not a valid IRC nickname");
                None
            }
        }
    };
    let password = read_secret(r, tbl, "password", "[irc]");
    let mut channels = Vec::new();
    for (c, cspan) in r.string_list(tbl, "channels", "[irc]").unwrap_or_default() {
        if check_irc_channel(&c) {
            channels.push(c);
        } else {
            r.err(&cspan, format!("{c:?} in [irc] is not an IRC channel name like \"#builds\""));
        }
    }
    Some(Irc { server: server?, tls, nick: nick?, password, channels })
}

pub(super) fn read_notifier(r: &mut Reader<'_>, tbl: Tbl<'_>, name: String, span: &Span) -> Option<Notifier> {
    let what = format!("notifier {name:?}");
    let mut vias = Vec::new();
    if tbl.t.get("webhook").is_some() {
        let url = http_url(r, tbl, "webhook", &what);
        let secret_file = r.string(tbl, "secret_file", &what).map(|s| s.0);
        vias.push(url.map(|url| NotifyVia::Webhook { url, secret_file }));
    }
    let email = r.string_list(tbl, "email", &what);
    let requester = r.boolean(tbl, "email_requester", &what).unwrap_or(false);
    if email.is_some() || requester {
        let mut to = Vec::new();
        for (a, aspan) in email.unwrap_or_default() {
            let ok = a.split_once('@').is_some_and(|(l, d)| !l.is_empty() && (d.contains('.') || d == "localhost"))
                && !a.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c));
            if ok {
                to.push(a);
            } else {
                r.err(&aspan, format!("`email` of {what}: {a:?} is not a mail address"));
            }
        }
        vias.push(Some(NotifyVia::Email { to, requester }));
    }
    if let Some((c, cspan)) = r.string(tbl, "irc", &what) {
        if check_irc_channel(&c) {
            vias.push(Some(NotifyVia::Irc { channel: c }));
        } else {
            r.err(&cspan, format!("`irc` of {what} must be a channel name like \"#builds\""));
            vias.push(None);
        }
    }
    if vias.len() != 1 {
        r.err(span, format!("{what} needs exactly one of `webhook`, `email` (or `email_requester`), `irc`"));
        return None;
    }
    let mut on = Vec::new();
    let mut fixed = false;
    for (st, sspan) in r.string_list(tbl, "on", &what).unwrap_or_else(|| vec![("failed".into(), None)]) {
        if st == "fixed" {
            fixed = true;
            continue;
        }
        if st == "all" {
            on.extend([BuildState::Succeeded, BuildState::Failed, BuildState::Cancelled, BuildState::Skipped]);
            continue;
        }
        match st.parse::<BuildState>() {
            Ok(s) if s.is_finished() => on.push(s),
            _ => r.err(
                &sspan,
                format!("`on` of {what}: {st:?} is not one of succeeded, failed, cancelled, skipped, fixed, all"),
            ),
        }
    }
    let components = r
        .string_list(tbl, "components", &what)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.0)
        .filter(|c| c != "*")
        .collect();
    let via = vias.pop()??;
    Some(Notifier { name, on, fixed, components, via })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_and_refs_are_checked() {
        for ok in
            ["https://git.example.org/x.git", "git://127.0.0.1:9418/x", "file:///srv/x", "git@example.org:o/x.git"]
        {
            assert!(check_git_url(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-uxx", "ext::sh -c evil", "fd::17", "https://", "/srv/x", "a b"] {
            assert!(check_git_url(bad).is_err(), "{bad}");
        }
        assert!(check_branch("release/1.x").is_ok());
        for bad in ["-f", "a..b", "x.lock", "a b", "x~1", ""] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
        assert!(check_revision("0123abc").is_ok());
        assert!(check_revision("main").is_err());
    }
}
