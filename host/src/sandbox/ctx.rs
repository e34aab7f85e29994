//! The per-sensor store data and the host side of every `attune:sensor` import.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{clock, fs, http, log, state, types};
use super::limiter::SensorLimiter;
use super::state::StateView;
use super::tape::{self, Answer, HostCall, HttpAnswer, Tape};
use crate::capabilities::{AllowedHosts, GrantedPaths};

/// Longest log line kept; the rest is cut.
const LOG_LINE_MAX_BYTES: usize = 2048;
/// Log lines (imports plus guest stdout/stderr) kept per call; the rest are counted and dropped.
const LOG_LINES_PER_CALL: u32 = 100;
/// Longest HTTP request the host makes, whatever the sensor asks.
const HTTP_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// Largest HTTP response body or file handed to a sensor.
const READ_CAP_BYTES: u64 = 8 << 20;

/// What a sensor may reach outside its memory, fixed when the sensor is loaded.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub http: AllowedHosts,
    pub paths: GrantedPaths,
}

/// Bounded sink for a sensor's log output; shared by the `log` import and guest stdout/stderr.
#[derive(Debug)]
pub struct LogSink {
    sensor_ref: Arc<str>,
    budget: Mutex<LogBudget>,
}

#[derive(Debug, Default)]
struct LogBudget {
    lines: u32,
    dropped: u32,
    partial: Vec<u8>,
}

impl LogSink {
    pub fn new(sensor_ref: Arc<str>) -> Arc<Self> {
        Arc::new(Self { sensor_ref, budget: Mutex::default() })
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, LogBudget> {
        // A poisoned lock only means another thread panicked mid-log; the counters are still fine.
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn emit(&self, level: log::Level, message: &str) {
        {
            let mut budget = self.budget();
            if budget.lines >= LOG_LINES_PER_CALL {
                budget.dropped += 1;
                return;
            }
            budget.lines += 1;
        }
        let message = truncate(message, LOG_LINE_MAX_BYTES);
        let sensor = &*self.sensor_ref;
        match level {
            log::Level::Trace => tracing::trace!(sensor, "{message}"),
            log::Level::Debug => tracing::debug!(sensor, "{message}"),
            log::Level::Info => tracing::info!(sensor, "{message}"),
            log::Level::Warn => tracing::warn!(sensor, "{message}"),
            log::Level::Error => tracing::error!(sensor, "{message}"),
        }
    }

    /// Guest stdout/stderr: split into lines, each logged at info.
    fn write_output(&self, bytes: &[u8]) {
        let lines: Vec<String> = {
            let mut budget = self.budget();
            budget.partial.extend_from_slice(bytes);
            let mut lines = Vec::new();
            while let Some(pos) = budget.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = budget.partial.drain(..=pos).collect();
                lines.push(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            if budget.partial.len() > LOG_LINE_MAX_BYTES {
                let line: Vec<u8> = budget.partial.drain(..).collect();
                lines.push(String::from_utf8_lossy(&line).into_owned());
            }
            lines
        };
        for line in lines {
            self.emit(log::Level::Info, &line);
        }
    }

    /// Starts a new call's budget.
    pub fn reset(&self) {
        let mut budget = self.budget();
        budget.lines = 0;
        budget.dropped = 0;
    }

    /// Ends a call: what it dropped past the budget is counted in one closing line.
    pub fn end_call(&self) {
        let dropped = std::mem::take(&mut self.budget().dropped);
        if dropped > 0 {
            tracing::warn!(
                sensor = &*self.sensor_ref,
                dropped,
                "{dropped} more log lines of this call were dropped (limit {LOG_LINES_PER_CALL} lines per call)"
            );
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Guest stdout/stderr as a WASI output stream that feeds the log sink and never fails.
#[derive(Debug, Clone)]
pub struct GuestOutput(pub Arc<LogSink>);

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.write_output(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Store data of one sensor instance.
pub struct SensorCtx {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: SensorLimiter,
    pub state: StateView,
    pub log: Arc<LogSink>,
    pub grants: Arc<Grants>,
    pub instances: super::InstanceFeed,
    pub http_client: reqwest::Client,
    /// Wall-clock deadline of the current call; the HTTP and filesystem host calls end by it too.
    pub deadline: Instant,
    /// Present while the host calls are recorded or replayed.
    pub tape: Option<Tape>,
}

impl std::fmt::Debug for SensorCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorCtx").field("sensor", &self.log.sensor_ref).finish_non_exhaustive()
    }
}

impl WasiView for SensorCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl SensorCtx {
    /// Records, or compares with the recording, a call the host answers for real. A difference
    /// in replay traps the sensor (the driver reports the difference itself).
    pub(super) fn taped(&self, call: impl FnOnce() -> HostCall) -> wasmtime::Result<()> {
        match &self.tape {
            Some(tape) => {
                tape.check(call()).map_err(|difference| wasmtime::Error::msg(format!("replay: {difference}")))
            }
            None => Ok(()),
        }
    }

    /// In replay, the recorded call that `call` (whose answer is left out) is expected to be;
    /// `None` when the host should make the call for real.
    fn replayed(&self, call: impl FnOnce() -> HostCall) -> Option<Result<HostCall, String>> {
        self.tape.as_ref().filter(|tape| tape.replaying()).map(|tape| tape.pass(call()))
    }

    /// In recording, keeps a call made for real with its answer.
    fn record(&self, call: impl FnOnce() -> HostCall) {
        if let Some(tape) = self.tape.as_ref().filter(|tape| !tape.replaying()) {
            // Recording accepts every call.
            let _ = tape.pass(call());
        }
    }
}

impl types::Host for SensorCtx {}

impl log::Host for SensorCtx {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.taped(|| HostCall::Log { level: format!("{level:?}").to_lowercase(), message: message.clone() })?;
        self.log.emit(level, &message);
        Ok(())
    }
}

impl state::Host for SensorCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let value = self.state.get(&key);
        self.taped(|| HostCall::StateGet { key, value: value.clone() })?;
        Ok(value)
    }
    fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let result = self.state.set(key.clone(), value.clone());
        self.taped(|| HostCall::StateSet { key, value, error: result.clone().err() })?;
        Ok(result)
    }
    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.taped(|| HostCall::StateDelete { key: key.clone() })?;
        self.state.delete(key);
        Ok(())
    }
    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        let keys = self.state.keys();
        self.taped(|| HostCall::StateKeys { keys: keys.clone() })?;
        Ok(keys)
    }
}

impl clock::Host for SensorCtx {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        match self.replayed(|| HostCall::ClockNow { now_ms: 0 }) {
            Some(Ok(HostCall::ClockNow { now_ms })) => Ok(now_ms),
            Some(Ok(_)) => Err(wasmtime::Error::msg("replay: the recording answered clock.now-ms with another call")),
            Some(Err(difference)) => Err(wasmtime::Error::msg(format!("replay: {difference}"))),
            None => {
                let now_ms = unix_ms(SystemTime::now());
                self.record(|| HostCall::ClockNow { now_ms });
                Ok(now_ms)
            }
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl http::Host for SensorCtx {
    async fn send(&mut self, request: http::OutgoingRequest) -> Result<http::IncomingResponse, http::HttpError> {
        if self.tape.is_none() {
            return self.send_live(request).await;
        }
        let recorded = tape::HttpRequest {
            method: request.method.clone(),
            url: request.url.clone(),
            headers: request.headers.clone(),
            body: request.body.clone().map(tape::Body::from_bytes),
            timeout_ms: request.timeout_ms,
        };
        match self.replayed(|| HostCall::HttpSend { request: recorded.clone(), answer: HttpAnswer::Timeout }) {
            Some(Ok(HostCall::HttpSend { answer, .. })) => from_http_answer(answer),
            Some(Ok(_)) => Err(http::HttpError::Transport("replay: the recording answered with another call".into())),
            Some(Err(difference)) => Err(http::HttpError::Transport(format!("replay: {difference}"))),
            None => {
                let result = self.send_live(request).await;
                self.record(|| HostCall::HttpSend { request: recorded, answer: to_http_answer(&result) });
                result
            }
        }
    }
}

fn to_http_answer(result: &Result<http::IncomingResponse, http::HttpError>) -> HttpAnswer {
    match result {
        Ok(r) => HttpAnswer::Ok(tape::HttpResponse {
            status: r.status,
            headers: r.headers.clone(),
            body: tape::Body::from_bytes(r.body.clone()),
        }),
        Err(http::HttpError::Denied(m)) => HttpAnswer::Denied(m.clone()),
        Err(http::HttpError::InvalidRequest(m)) => HttpAnswer::InvalidRequest(m.clone()),
        Err(http::HttpError::Timeout) => HttpAnswer::Timeout,
        Err(http::HttpError::TooLarge(cap)) => HttpAnswer::TooLarge(*cap),
        Err(http::HttpError::Transport(m)) => HttpAnswer::Transport(m.clone()),
    }
}

fn from_http_answer(answer: HttpAnswer) -> Result<http::IncomingResponse, http::HttpError> {
    match answer {
        HttpAnswer::Ok(r) => Ok(http::IncomingResponse {
            status: r.status,
            headers: r.headers,
            body: r.body.to_bytes().map_err(http::HttpError::Transport)?,
        }),
        HttpAnswer::Denied(m) => Err(http::HttpError::Denied(m)),
        HttpAnswer::InvalidRequest(m) => Err(http::HttpError::InvalidRequest(m)),
        HttpAnswer::Timeout => Err(http::HttpError::Timeout),
        HttpAnswer::TooLarge(cap) => Err(http::HttpError::TooLarge(cap)),
        HttpAnswer::Transport(m) => Err(http::HttpError::Transport(m)),
    }
}

impl SensorCtx {
    async fn send_live(&mut self, request: http::OutgoingRequest) -> Result<http::IncomingResponse, http::HttpError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| http::HttpError::InvalidRequest(format!("{}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(http::HttpError::InvalidRequest(format!("{}: only http and https are supported", request.url)));
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(0);
        if !self.grants.http.allows(host, port) {
            let allowed = if self.grants.http.is_empty() { "none".to_string() } else { self.grants.http.to_string() };
            return Err(http::HttpError::Denied(format!(
                "{host}:{port} is not an allowed host (allowed: {allowed}); grant it in the sensor manifest's \
                 capabilities.http (`sensor run` also takes --allow-http {host}:{port})"
            )));
        }
        let method = match request.method.to_ascii_uppercase().as_str() {
            m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD") => {
                reqwest::Method::from_bytes(m.as_bytes()).map_err(|e| http::HttpError::InvalidRequest(e.to_string()))?
            }
            other => {
                return Err(http::HttpError::InvalidRequest(format!("unsupported method `{other}`")));
            }
        };
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let asked = request.timeout_ms.map_or(HTTP_TIMEOUT_MAX, |ms| Duration::from_millis(ms.into()));
        let timeout = asked.min(HTTP_TIMEOUT_MAX).min(remaining);

        let mut builder = self.http_client.request(method, url).timeout(timeout);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() { http::HttpError::Timeout } else { http::HttpError::Transport(e.to_string()) }
        };
        let mut response = builder.send().await.map_err(transport)?;
        let cap = READ_CAP_BYTES.min(self.limiter.limit_bytes() as u64 / 4);
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(http::HttpError::TooLarge(cap));
        }
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if (body.len() + chunk.len()) as u64 > cap {
                return Err(http::HttpError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::IncomingResponse { status, headers, body })
    }
}

impl fs::Host for SensorCtx {
    async fn list_dir(&mut self, path: String) -> Result<Vec<fs::DirEntry>, String> {
        match self.replayed(|| HostCall::FsListDir { path: path.clone(), answer: Answer::Error(String::new()) }) {
            Some(Ok(HostCall::FsListDir { answer: Answer::Ok(entries), .. })) => {
                return Ok(entries.into_iter().map(fs::DirEntry::from).collect());
            }
            Some(Ok(HostCall::FsListDir { answer: Answer::Error(e), .. })) => return Err(e),
            Some(Ok(_)) => return Err("replay: the recording answered with another call".into()),
            Some(Err(difference)) => return Err(format!("replay: {difference}")),
            None => {}
        }
        let listed = off_thread(&self.grants, self.deadline, path.clone(), |paths, path| paths.list_dir(path)).await;
        let entries: Result<Vec<fs::DirEntry>, String> = listed.map(|entries| {
            entries
                .into_iter()
                .map(|e| fs::DirEntry {
                    name: e.name,
                    is_dir: e.is_dir,
                    size: e.size,
                    modified_ms: e.modified.map(unix_ms).unwrap_or(0),
                })
                .collect()
        });
        self.record(|| HostCall::FsListDir {
            path,
            answer: match &entries {
                Ok(entries) => Answer::Ok(entries.iter().map(tape::DirEntry::from).collect()),
                Err(e) => Answer::Error(e.clone()),
            },
        });
        entries
    }

    async fn read_file(&mut self, path: String) -> Result<Vec<u8>, String> {
        match self.replayed(|| HostCall::FsReadFile { path: path.clone(), answer: Answer::Error(String::new()) }) {
            Some(Ok(HostCall::FsReadFile { answer: Answer::Ok(body), .. })) => return body.to_bytes(),
            Some(Ok(HostCall::FsReadFile { answer: Answer::Error(e), .. })) => return Err(e),
            Some(Ok(_)) => return Err("replay: the recording answered with another call".into()),
            Some(Err(difference)) => return Err(format!("replay: {difference}")),
            None => {}
        }
        let cap = READ_CAP_BYTES.min(self.limiter.limit_bytes() as u64 / 4);
        let read =
            off_thread(&self.grants, self.deadline, path.clone(), move |paths, path| paths.read_file(path, cap)).await;
        self.record(|| HostCall::FsReadFile {
            path,
            answer: match &read {
                Ok(bytes) => Answer::Ok(tape::Body::from_bytes(bytes.clone())),
                Err(e) => Answer::Error(e.clone()),
            },
        });
        read
    }
}

impl From<&fs::DirEntry> for tape::DirEntry {
    fn from(e: &fs::DirEntry) -> Self {
        Self { name: e.name.clone(), is_dir: e.is_dir, size: e.size, modified_ms: e.modified_ms }
    }
}

impl From<tape::DirEntry> for fs::DirEntry {
    fn from(e: tape::DirEntry) -> Self {
        Self { name: e.name, is_dir: e.is_dir, size: e.size, modified_ms: e.modified_ms }
    }
}

/// Runs one filesystem call of the sensor on a thread of its own and waits for it until the
/// poll's `deadline`: a filesystem that does not answer (a hung network mount, a FUSE server)
/// holds that thread, never the poll, a runtime worker or the shutdown (the thread is not
/// joined). While such a call is still running, the sensor's next ones are refused at once.
async fn off_thread<T: Send + 'static>(
    grants: &Arc<Grants>,
    deadline: Instant,
    path: String,
    call: impl FnOnce(&GrantedPaths, &str) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let Some(guard) = grants.paths.begin_call() else {
        return Err(format!("{path}: an earlier filesystem call of this sensor has not returned yet"));
    };
    if Instant::now() >= deadline {
        return Err(format!("{path}: the poll's deadline has passed"));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let grants = grants.clone();
    let job_path = path.clone();
    std::thread::Builder::new()
        .name("attune-fs".into())
        .spawn(move || {
            let result = call(&grants.paths, &job_path);
            drop(guard);
            let _ = tx.send(result);
        })
        .map_err(|e| format!("{path}: cannot start the filesystem call: {e}"))?;
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(format!("{path}: the filesystem call failed")),
        Err(_) => Err(format!("{path}: no answer from the filesystem before the poll's deadline")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_stuck_filesystem_call_ends_at_the_deadline() {
        let grants = Arc::new(Grants::default());
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        let stuck = off_thread(&grants, deadline, "x".into(), |_, _| {
            std::thread::sleep(Duration::from_millis(600));
            Ok(())
        });
        let error = stuck.await.unwrap_err();
        assert_eq!(error, "x: no answer from the filesystem before the poll's deadline");
        assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
        // Until it returns, the sensor's next calls are refused at once.
        let next = off_thread(&grants, Instant::now() + Duration::from_secs(1), "y".into(), |_, _| Ok(()));
        assert!(next.await.unwrap_err().contains("has not returned yet"));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let next = off_thread(&grants, Instant::now() + Duration::from_secs(1), "y".into(), |_, _| Ok(()));
        assert_eq!(next.await, Ok(()));
    }
}
