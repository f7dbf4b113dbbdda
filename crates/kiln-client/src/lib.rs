//! A typed client for the kiln master's JSON API, used by the `kiln` CLI,
//! the demo, the benchmark and the integration tests.

use kiln_proto::api::{
    Artifact, Build, BuildPage, BuildRequestBody, BuildRequestCreated, BuilderInfo, ErrorBody, LogChunk, Status,
    UploadAccepted, WorkerInfo,
};
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the master at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the master: {0}")]
    Decode(String),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("artifact {name} arrived damaged: expected SHA-256 {expected}, got {got}")]
    Damaged { name: String, expected: String, got: String },
    #[error("this command needs a token: pass --token-file FILE or set KILN_TOKEN (the master wrote one to DATA_DIR/admin.token)")]
    NoToken,
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Filters for [`Client::builds`].
#[derive(Debug, Clone, Default)]
pub struct BuildQuery {
    pub state: Option<String>,
    pub component: Option<String>,
    pub target: Option<String>,
    pub request: Option<i64>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Result<Client> {
        Client::configured(url, token, None)
    }

    /// A client of a master whose HTTPS certificate comes from a private CA
    /// (`ca_pem`, e.g. made with `kiln cert ca`).
    pub fn with_ca(url: &str, token: Option<String>, ca_pem: &[u8]) -> Result<Client> {
        let ca = reqwest::Certificate::from_pem(ca_pem)
            .map_err(|e| ClientError::Unreachable { url: url.to_string(), source: e })?;
        Client::configured(url, token, Some(ca))
    }

    fn configured(url: &str, token: Option<String>, ca: Option<reqwest::Certificate>) -> Result<Client> {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = ca {
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| ClientError::Unreachable { url: url.to_string(), source: e })?;
        Ok(Client { base: url.trim_end_matches('/').to_string(), token, http })
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        // A read may go again once when its connection failed before an
        // answer: a kept-alive connection the master closed as idle (its
        // `header_timeout`) can break just as a request goes out on it.
        let unreachable = |e| ClientError::Unreachable { url: self.base.clone(), source: e };
        let req = req.build().map_err(unreachable)?;
        let again = if is_read(&req) { req.try_clone() } else { None };
        let sent = match (self.http.execute(req).await, again) {
            (Err(e), Some(again)) if (e.is_request() || e.is_connect()) && !e.is_timeout() => {
                self.http.execute(again).await
            }
            (sent, _) => sent,
        };
        let resp = sent.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(500).collect());
            return Err(ClientError::Api { status: status.as_u16(), message });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A read: with the token when there is one (a master may close reads).
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    fn authed(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let token = self.token.as_deref().ok_or(ClientError::NoToken)?;
        Ok(self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token))
    }

    pub async fn users(&self) -> Result<Vec<kiln_proto::api::UserInfo>> {
        self.send(self.authed(reqwest::Method::GET, "/api/v1/users")?).await
    }

    /// Adds a user; the answer holds their first token.
    pub async fn add_user(&self, body: &kiln_proto::api::NewUser) -> Result<kiln_proto::api::TokenCreated> {
        self.send(self.post("/api/v1/users")?.json(body)).await
    }

    pub async fn remove_user(&self, email: &str) -> Result<kiln_proto::api::UserInfo> {
        let path = format!("/api/v1/users/{}", url_path_segment(email));
        self.send(self.authed(reqwest::Method::DELETE, &path)?).await
    }

    /// Tokens: one's own (`None`), a user's, or everyone's (`Some("*")`).
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<kiln_proto::api::TokenInfo>> {
        let mut req = self.authed(reqwest::Method::GET, "/api/v1/tokens")?;
        if let Some(u) = user {
            req = req.query(&[("user", u)]);
        }
        self.send(req).await
    }

    pub async fn create_token(&self, body: &kiln_proto::api::NewToken) -> Result<kiln_proto::api::TokenCreated> {
        self.send(self.post("/api/v1/tokens")?.json(body)).await
    }

    pub async fn revoke_token(&self, id: i64) -> Result<kiln_proto::api::TokenInfo> {
        self.send(self.authed(reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"))?).await
    }

    fn post(&self, path: &str) -> Result<reqwest::RequestBuilder> {
        let token = self.token.as_deref().ok_or(ClientError::NoToken)?;
        Ok(self.http.post(format!("{}{path}", self.base)).bearer_auth(token))
    }

    pub async fn status(&self) -> Result<Status> {
        self.send(self.get("/api/v1/status")).await
    }

    pub async fn create_builds(&self, body: &BuildRequestBody) -> Result<BuildRequestCreated> {
        self.send(self.post("/api/v1/builds")?.json(body)).await
    }

    pub async fn builds(&self, q: &BuildQuery) -> Result<BuildPage> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &q.state {
            params.push(("state", s.clone()));
        }
        if let Some(c) = &q.component {
            params.push(("component", c.clone()));
        }
        if let Some(t) = &q.target {
            params.push(("target", t.clone()));
        }
        if let Some(r) = q.request {
            params.push(("request", r.to_string()));
        }
        if let Some(b) = q.before {
            params.push(("before", b.to_string()));
        }
        if let Some(l) = q.limit {
            params.push(("limit", l.to_string()));
        }
        self.send(self.get("/api/v1/builds").query(&params)).await
    }

    pub async fn build(&self, id: i64) -> Result<Build> {
        self.send(self.get(&format!("/api/v1/builds/{id}"))).await
    }

    pub async fn cancel(&self, id: i64) -> Result<Build> {
        self.send(self.post(&format!("/api/v1/builds/{id}/cancel"))?).await
    }

    /// Builds build `id` again: the same component, target, request
    /// properties and source.
    pub async fn rebuild(&self, id: i64) -> Result<BuildRequestCreated> {
        self.send(self.post(&format!("/api/v1/builds/{id}/rebuild"))?).await
    }

    /// Pins build `id` (it keeps its logs and artifacts) or unpins it.
    pub async fn pin(&self, id: i64, pinned: bool) -> Result<Build> {
        let body = kiln_proto::api::PinRequest { pinned };
        self.send(self.post(&format!("/api/v1/builds/{id}/pin"))?.json(&body)).await
    }

    /// Runs a garbage collection by the master's `[retention]` rules.
    pub async fn gc(&self, dry_run: bool) -> Result<kiln_proto::api::GcReport> {
        let body = kiln_proto::api::GcRequest { dry_run };
        self.send(self.post("/api/v1/gc")?.json(&body)).await
    }

    pub async fn log(&self, id: i64, step: &str, offset: u64) -> Result<LogChunk> {
        let step = step.replace('/', "%2F");
        self.send(self.get(&format!("/api/v1/builds/{id}/steps/{step}/log")).query(&[("offset", offset)])).await
    }

    /// Downloads an artifact into `dir`, checking its SHA-256; the file
    /// appears under its name only when it is complete and correct.
    pub async fn download(&self, artifact: &Artifact, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        use sha2::{Digest, Sha256};
        use std::io::Write;
        let unreachable = |e| ClientError::Unreachable { url: self.base.clone(), source: e };
        let mut resp = self.get(&artifact.url).send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&body).map(|e| e.error).unwrap_or(body);
            return Err(ClientError::Api { status, message });
        }
        let dest = dir.join(&artifact.name);
        let tmp = dir.join(format!(".{}.part", artifact.name));
        let werr = |source| ClientError::Write { path: tmp.display().to_string(), source };
        let mut file = std::fs::File::create(&tmp).map_err(werr)?;
        let mut hash = Sha256::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            hash.update(&chunk);
            file.write_all(&chunk).map_err(werr)?;
        }
        file.sync_all().map_err(werr)?;
        let got = hex::encode(hash.finalize());
        if got != artifact.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(ClientError::Damaged { name: artifact.name.clone(), expected: artifact.sha256.clone(), got });
        }
        std::fs::rename(&tmp, &dest)
            .map_err(|source| ClientError::Write { path: dest.display().to_string(), source })?;
        Ok(dest)
    }

    /// Uploads a source package: `files` are (name, contents), the control
    /// file among them.
    pub async fn upload(
        &self,
        files: Vec<(String, Vec<u8>)>,
        targets: &[String],
        properties: &[(String, String)],
    ) -> Result<UploadAccepted> {
        let mut form = reqwest::multipart::Form::new();
        for t in targets {
            form = form.text("target", t.clone());
        }
        for (k, v) in properties {
            form = form.text("property", format!("{k}={v}"));
        }
        for (name, bytes) in files {
            form = form.part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
        }
        self.send(self.post("/api/v1/uploads")?.multipart(form)).await
    }

    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.send(self.get("/api/v1/workers")).await
    }

    /// Drains worker `name`: it finishes what it runs and takes nothing new.
    pub async fn drain_worker(&self, name: &str, reason: Option<&str>) -> Result<WorkerInfo> {
        let body = kiln_proto::api::DrainBody { reason: reason.map(str::to_string) };
        self.send(self.post(&format!("/api/v1/workers/{}/drain", url_path_segment(name)))?.json(&body)).await
    }

    /// Gives drained worker `name` builds again.
    pub async fn resume_worker(&self, name: &str) -> Result<WorkerInfo> {
        self.send(self.post(&format!("/api/v1/workers/{}/resume", url_path_segment(name)))?).await
    }

    pub async fn builders(&self) -> Result<Vec<BuilderInfo>> {
        self.send(self.get("/api/v1/builders")).await
    }
}

/// Repositories.
impl Client {
    pub async fn channels(&self) -> Result<Vec<kiln_proto::api::ChannelInfo>> {
        self.send(self.get("/api/v1/repos")).await
    }

    pub async fn packages(
        &self,
        channel: &str,
        filter: Option<&str>,
        target: Option<&str>,
    ) -> Result<Vec<kiln_proto::api::PackageInfo>> {
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(f) = filter {
            params.push(("filter", f));
        }
        if let Some(t) = target {
            params.push(("target", t));
        }
        self.send(self.get(&format!("/api/v1/repos/{channel}/packages")).query(&params)).await
    }

    pub async fn promote(&self, body: &kiln_proto::api::PromoteBody) -> Result<kiln_proto::api::RepoChange> {
        self.send(self.post("/api/v1/repos/promote")?.json(body)).await
    }

    pub async fn remove_package(
        &self,
        channel: &str,
        body: &kiln_proto::api::RemoveBody,
    ) -> Result<kiln_proto::api::RepoChange> {
        self.send(self.post(&format!("/api/v1/repos/{channel}/remove"))?.json(body)).await
    }

    pub async fn snapshot(&self, channel: &str, name: &str) -> Result<kiln_proto::api::RepoChange> {
        let body = kiln_proto::api::SnapshotBody { name: name.to_string() };
        self.send(self.post(&format!("/api/v1/repos/{channel}/snapshots"))?.json(&body)).await
    }

    /// Signs every package of `channel` again with its current key.
    pub async fn resign(&self, channel: &str) -> Result<kiln_proto::api::RepoChange> {
        self.send(self.post(&format!("/api/v1/repos/{channel}/resign"))?).await
    }

    /// Publishes an advisory in `channel`.
    pub async fn add_advisory(
        &self,
        channel: &str,
        body: &kiln_proto::api::AdvisoryBody,
    ) -> Result<kiln_proto::api::RepoChange> {
        self.send(self.post(&format!("/api/v1/repos/{channel}/advisories"))?.json(body)).await
    }

    /// Takes advisory `id` out of `channel`.
    pub async fn remove_advisory(&self, channel: &str, id: &str) -> Result<kiln_proto::api::RepoChange> {
        let path = format!("/api/v1/repos/{channel}/advisories/{}", url_path_segment(id));
        self.send(self.authed(reqwest::Method::DELETE, &path)?).await
    }

    pub async fn advisories(&self, channel: &str) -> Result<Vec<kiln_proto::api::AdvisoryInfo>> {
        self.send(self.get(&format!("/api/v1/repos/{channel}/advisories"))).await
    }

    pub async fn snapshots(&self, channel: &str) -> Result<Vec<kiln_proto::api::SnapshotInfo>> {
        self.send(self.get(&format!("/api/v1/repos/{channel}/snapshots"))).await
    }

    pub async fn rollback(&self, channel: &str, name: &str) -> Result<kiln_proto::api::RepoChange> {
        let body = kiln_proto::api::SnapshotBody { name: name.to_string() };
        self.send(self.post(&format!("/api/v1/repos/{channel}/rollback"))?.json(&body)).await
    }
}

/// Percent-encodes what a path segment cannot hold as it is.
fn url_path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' | b'+' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a request only reads (GET or HEAD), so sending it twice is harmless.
fn is_read(req: &reqwest::Request) -> bool {
    matches!(*req.method(), reqwest::Method::GET | reqwest::Method::HEAD)
}
