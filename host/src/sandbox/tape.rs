//! Record and replay of a sensor's host calls (`sensor run --record`, `sensor test`).
//!
//! Recording, every `attune:sensor` import a call makes is kept in order with its answer. In
//! replay, each import must be the one the recording has next, with the same arguments: the
//! outside world's answers (clock, HTTP, files) come from the recording, while the state store,
//! the log and the trigger instances run for real (seeded from the recording) and are compared.
//! WASI's wall clock follows the recording too, and randomness is a fixed sequence in both modes,
//! so a sensor that reads `time.time()` or draws a uuid replays the same.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use wasmtime_wasi::HostWallClock;

/// Secrets a recording keeps as their references: (value, `{{ secret.NAME }}`) pairs.
pub type Redactions = Vec<(String, String)>;

/// One host call and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call")]
pub enum HostCall {
    #[serde(rename = "log")]
    Log { level: String, message: String },
    #[serde(rename = "state.get")]
    StateGet { key: String, value: Option<String> },
    #[serde(rename = "state.set")]
    StateSet {
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    #[serde(rename = "state.delete")]
    StateDelete { key: String },
    #[serde(rename = "state.keys")]
    StateKeys { keys: Vec<String> },
    #[serde(rename = "instances.current")]
    Instances { rules: Vec<String> },
    #[serde(rename = "clock.now-ms")]
    ClockNow { now_ms: u64 },
    #[serde(rename = "http.send")]
    HttpSend { request: HttpRequest, answer: HttpAnswer },
    #[serde(rename = "fs.list-dir")]
    FsListDir { path: String, answer: Answer<Vec<DirEntry>> },
    #[serde(rename = "fs.read-file")]
    FsReadFile { path: String, answer: Answer<Body> },
}

/// A filesystem call's answer: a value, or the error the sensor was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer<T> {
    Ok(T),
    Error(String),
}

/// An HTTP call's answer: a response, or the WIT `http-error` the sensor was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpAnswer {
    Ok(HttpResponse),
    Denied(String),
    InvalidRequest(String),
    Timeout,
    TooLarge(u64),
    Transport(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub modified_ms: u64,
}

/// Bytes as text when they are UTF-8 (readable and editable in the recording), else base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Body {
    Text { text: String },
    Base64 { base64: String },
}

impl Body {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => Self::Text { text },
            Err(e) => Self::Base64 { base64: base64::engine::general_purpose::STANDARD.encode(e.into_bytes()) },
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            Self::Text { text } => Ok(text.clone().into_bytes()),
            Self::Base64 { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|e| format!("the recorded body is not valid base64: {e}")),
        }
    }
}

impl HostCall {
    /// Whether `self` is the same call as `other` with the same arguments (answers aside).
    fn same_request(&self, other: &HostCall) -> bool {
        use HostCall::*;
        match (self, other) {
            (Log { level, message }, Log { level: l, message: m }) => level == l && message == m,
            (StateGet { key, .. }, StateGet { key: k, .. }) | (StateDelete { key }, StateDelete { key: k }) => key == k,
            (StateSet { key, value, .. }, StateSet { key: k, value: v, .. }) => key == k && value == v,
            (StateKeys { .. }, StateKeys { .. })
            | (Instances { .. }, Instances { .. })
            | (ClockNow { .. }, ClockNow { .. }) => true,
            (HttpSend { request, .. }, HttpSend { request: r, .. }) => request == r,
            (FsListDir { path, .. }, FsListDir { path: p, .. })
            | (FsReadFile { path, .. }, FsReadFile { path: p, .. }) => path == p,
            _ => false,
        }
    }

    /// The call as a reader would name it, e.g. `http.send GET https://example.com/items`.
    pub fn describe(&self) -> String {
        use HostCall::*;
        let short = |s: &str| {
            if s.len() > 80 {
                let mut end = 80;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &s[..end])
            } else {
                s.to_string()
            }
        };
        match self {
            Log { level, message } => format!("log {level} {:?}", short(message)),
            StateGet { key, .. } => format!("state.get {key:?}"),
            StateSet { key, value, .. } => format!("state.set {key:?} = {:?}", short(value)),
            StateDelete { key } => format!("state.delete {key:?}"),
            StateKeys { .. } => "state.keys".into(),
            Instances { .. } => "instances.current".into(),
            ClockNow { .. } => "clock.now-ms".into(),
            HttpSend { request, .. } => {
                let body = match &request.body {
                    Some(Body::Text { text }) => format!(" body {:?}", short(text)),
                    Some(Body::Base64 { base64 }) => format!(" body (base64) {}", short(base64)),
                    None => String::new(),
                };
                format!("http.send {} {}{body}", request.method, request.url)
            }
            FsListDir { path, .. } => format!("fs.list-dir {path:?}"),
            FsReadFile { path, .. } => format!("fs.read-file {path:?}"),
        }
    }
}

/// The host calls of one call into the sensor (its start, or one poll).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapeStep {
    pub calls: Vec<HostCall>,
    /// WASI wall-clock readings (e.g. Python's `time.time()`), in ms since the epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wall_clock_ms: Vec<u64>,
}

#[derive(Debug)]
enum Mode {
    Record,
    Replay { next: usize, wall_next: usize, mismatch: Option<String> },
}

/// A sensor's tape, shared by its store's host calls and the driver of the run.
#[derive(Debug, Clone)]
pub struct Tape(Arc<Mutex<TapeInner>>);

#[derive(Debug)]
struct TapeInner {
    mode: Mode,
    step: TapeStep,
    /// Recording: (secret value, `{{ secret.NAME }}`) pairs; each value is kept as its reference.
    redactions: Redactions,
}

/// Seed of a taped sensor's randomness: fixed, so record and replay draw the same numbers.
pub(super) const RANDOM_SEED: u64 = 0x5eed_a77e;

impl Tape {
    /// A recording that keeps each secret of `redactions` (value, reference) as its reference.
    /// Replay hands the sensor the references themselves as its secrets, so the two agree
    /// without the secrets.
    pub fn record(redactions: Redactions) -> Self {
        let tape = Self::new(Mode::Record);
        tape.inner().redactions = redactions;
        tape
    }

    /// Whether answers come from the recording.
    pub fn replaying(&self) -> bool {
        matches!(self.inner().mode, Mode::Replay { .. })
    }

    pub fn replay() -> Self {
        Self::new(Mode::Replay { next: 0, wall_next: 0, mismatch: None })
    }

    fn new(mode: Mode) -> Self {
        Self(Arc::new(Mutex::new(TapeInner { mode, step: TapeStep::default(), redactions: Vec::new() })))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, TapeInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recording: the calls made since the last step. Replay: the calls left unmade are
    /// returned too (the driver reports them).
    pub fn take_step(&self) -> TapeStep {
        std::mem::take(&mut self.inner().step)
    }

    /// Replay: the calls the next call into the sensor must make.
    pub fn expect(&self, step: TapeStep) {
        let mut inner = self.inner();
        inner.step = step;
        inner.mode = Mode::Replay { next: 0, wall_next: 0, mismatch: None };
    }

    /// Replay: the first difference of the current step, if any: a call out of order or with
    /// other arguments, or calls the recording has that were not made.
    pub fn difference(&self) -> Option<String> {
        let inner = self.inner();
        match &inner.mode {
            Mode::Record => None,
            Mode::Replay { mismatch: Some(m), .. } => Some(m.clone()),
            Mode::Replay { next, .. } => inner.step.calls.get(*next).map(|missing| {
                format!(
                    "host call {}: the recording has {} (and {} more) that the sensor did not make",
                    next + 1,
                    missing.describe(),
                    inner.step.calls.len() - next - 1
                )
            }),
        }
    }

    /// Records `call` (recording), or checks it is the one expected next and returns the
    /// recorded one, whose answer the sensor is given (replay). `Err` names the difference.
    pub fn pass(&self, call: HostCall) -> Result<HostCall, String> {
        self.pass_comparing(call, false)
    }

    /// Records (or, in replay, compares, answer included) a call whose answer the host computes
    /// for real: state, log, instances.
    pub fn check(&self, call: HostCall) -> Result<(), String> {
        self.pass_comparing(call, true).map(drop)
    }

    fn pass_comparing(&self, call: HostCall, answers_too: bool) -> Result<HostCall, String> {
        let mut inner = self.inner();
        let TapeInner { mode, step, redactions } = &mut *inner;
        let (next, mismatch) = match mode {
            Mode::Record => {
                step.calls.push(redact(&call, redactions));
                return Ok(call);
            }
            Mode::Replay { mismatch: Some(m), .. } => return Err(m.clone()),
            Mode::Replay { next, mismatch, .. } => (next, mismatch),
        };
        let number = *next + 1;
        let outcome = match step.calls.get(*next) {
            Some(expected) if !expected.same_request(&call) => Err(format!(
                "host call {number}: the recording has {}, the sensor made {}",
                expected.describe(),
                call.describe()
            )),
            Some(expected) if answers_too && expected != &call => Err(format!(
                "host call {number}: {} answered {} in the recording, {} now",
                call.describe(),
                answer(expected),
                answer(&call)
            )),
            Some(expected) => Ok(expected.clone()),
            None => Err(format!(
                "host call {number}: the sensor made {}, past the {} calls of the recording",
                call.describe(),
                step.calls.len()
            )),
        };
        match &outcome {
            Ok(_) => *next += 1,
            Err(m) => *mismatch = Some(m.clone()),
        }
        outcome
    }

    /// Randomness for a taped store: the same numbers in record and replay.
    pub fn random() -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(RANDOM_SEED)
    }
}

/// `value` with every secret of `redactions` replaced by its reference, in every string.
pub fn redact_value(value: &mut serde_json::Value, redactions: &[(String, String)]) {
    match value {
        serde_json::Value::String(text) => {
            for (secret, reference) in redactions {
                if text.contains(secret.as_str()) {
                    *text = text.replace(secret.as_str(), reference);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| redact_value(item, redactions)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|item| redact_value(item, redactions)),
        _ => {}
    }
}

fn redact(call: &HostCall, redactions: &[(String, String)]) -> HostCall {
    if redactions.is_empty() {
        return call.clone();
    }
    let Ok(mut value) = serde_json::to_value(call) else { return call.clone() };
    redact_value(&mut value, redactions);
    serde_json::from_value(value).unwrap_or_else(|_| call.clone())
}

/// The answer part of a call the host computes for real, for a difference message.
fn answer(call: &HostCall) -> String {
    match call {
        HostCall::StateGet { value, .. } => serde_json::to_string(value).unwrap_or_default(),
        HostCall::StateSet { error, .. } => error.as_ref().map_or_else(|| "ok".into(), |e| format!("error {e:?}")),
        HostCall::StateKeys { keys } => serde_json::to_string(keys).unwrap_or_default(),
        HostCall::Instances { rules } => format!("rules {}", serde_json::to_string(rules).unwrap_or_default()),
        other => other.describe(),
    }
}

/// WASI's wall clock for a taped store: read for real and kept (recording), or played back in
/// order, the last reading repeating once they run out (replay).
impl HostWallClock for Tape {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        let mut inner = self.inner();
        let TapeInner { mode, step, .. } = &mut *inner;
        let ms = match mode {
            Mode::Record => {
                let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                step.wall_clock_ms.push(ms);
                ms
            }
            Mode::Replay { wall_next, .. } => {
                let ms = step.wall_clock_ms.get(*wall_next).or(step.wall_clock_ms.last()).copied().unwrap_or(0);
                *wall_next += 1;
                ms
            }
        };
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn get(url: &str) -> HostCall {
        HostCall::HttpSend {
            request: HttpRequest {
                method: "GET".into(),
                url: url.into(),
                headers: vec![],
                body: None,
                timeout_ms: None,
            },
            answer: HttpAnswer::Ok(HttpResponse {
                status: 200,
                headers: vec![],
                body: Body::from_bytes(b"{}".to_vec()),
            }),
        }
    }

    #[test]
    fn replay_answers_from_the_recording_and_names_the_first_difference() {
        let recording = Tape::record(Vec::new());
        recording.pass(HostCall::ClockNow { now_ms: 5 }).unwrap();
        recording.pass(get("http://x/items")).unwrap();
        recording.check(HostCall::StateSet { key: "cursor".into(), value: "1".into(), error: None }).unwrap();
        let step = recording.take_step();
        assert_eq!(step.calls.len(), 3);

        let replay = Tape::replay();
        replay.expect(step.clone());
        assert_eq!(replay.pass(HostCall::ClockNow { now_ms: 0 }).unwrap(), HostCall::ClockNow { now_ms: 5 });
        let error = replay.pass(get("http://x/items?page=2")).unwrap_err();
        assert_eq!(
            error,
            "host call 2: the recording has http.send GET http://x/items, the sensor made http.send GET http://x/items?page=2"
        );
        // Everything after the first difference is refused with it.
        assert_eq!(replay.pass(get("http://x/items")).unwrap_err(), error);
        assert_eq!(replay.difference(), Some(error));

        replay.expect(step);
        replay.pass(HostCall::ClockNow { now_ms: 0 }).unwrap();
        assert!(replay.difference().unwrap().contains("the recording has http.send GET http://x/items (and 1 more)"));
    }

    #[test]
    fn secrets_are_recorded_as_their_references() {
        let tape = Tape::record(vec![("s3cret".into(), "{{ secret.TOKEN }}".into())]);
        let call = HostCall::HttpSend {
            request: HttpRequest {
                method: "GET".into(),
                url: "http://x/?key=s3cret".into(),
                headers: vec![("authorization".into(), "Bearer s3cret".into())],
                body: None,
                timeout_ms: None,
            },
            answer: HttpAnswer::Timeout,
        };
        // The sensor is answered as made; the tape keeps the reference.
        assert_eq!(tape.pass(call).unwrap().describe(), "http.send GET http://x/?key=s3cret");
        let kept = serde_json::to_string(&tape.take_step()).unwrap();
        assert!(!kept.contains("s3cret"), "{kept}");
        assert!(kept.contains("Bearer {{ secret.TOKEN }}") && kept.contains("key={{ secret.TOKEN }}"), "{kept}");
    }

    #[test]
    fn bodies_are_text_when_they_can_be() {
        assert_eq!(Body::from_bytes(b"hi".to_vec()), Body::Text { text: "hi".into() });
        let binary = Body::from_bytes(vec![0xff, 0x00]);
        assert_eq!(binary, Body::Base64 { base64: "/wA=".into() });
        assert_eq!(binary.to_bytes().unwrap(), vec![0xff, 0x00]);
        let json = serde_json::to_value(get("http://x/")).unwrap();
        assert_eq!(json["call"], "http.send");
        assert_eq!(json["answer"]["ok"]["body"]["text"], "{}");
        assert_eq!(serde_json::from_value::<HostCall>(json).unwrap(), get("http://x/"));
    }
}
