//! `GET /api/v1/stream`: new events and enforcements as server-sent events, as the bus carries
//! them (so a host streams what every host sharing the bus stores).
//!
//! Bounded twice: at most [`MAX_STREAMS`] streams at once per host (beyond, 429
//! `too_many_streams`), and each stream holds at most [`CLIENT_BUFFER`] messages it has not sent
//! yet. One task per host follows the bus and hands each message to every stream through one
//! ring of that size, so the bus never waits on a slow client: a client that falls a whole ring
//! behind loses the oldest messages and is told how many (`event: dropped`), rather than the
//! host holding more for it.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use attune_bus::routing::{ENFORCEMENT_CREATED, EVENT_CREATED};
use attune_bus::{Bus, Delivery};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use super::ApiState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::events::rfc3339;

/// Streams one host serves at once.
pub const MAX_STREAMS: usize = 32;
/// Messages a stream may be behind before it loses the oldest.
pub const CLIENT_BUFFER: usize = 256;
/// A comment line this often keeps proxies from closing a quiet stream, and finds clients gone.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One message for the streams: the SSE event name and its JSON data.
#[derive(Debug, Clone)]
struct Item {
    kind: &'static str,
    id: String,
    data: Value,
}

/// The streams of one host: the bus follower (started with the first stream) and the slots.
#[derive(Debug)]
pub struct StreamHub {
    feed: OnceLock<broadcast::Sender<Arc<Item>>>,
    slots: Arc<Semaphore>,
}

impl Default for StreamHub {
    fn default() -> Self {
        StreamHub { feed: OnceLock::new(), slots: Arc::new(Semaphore::new(MAX_STREAMS)) }
    }
}

impl StreamHub {
    /// A new receiver of the bus messages, starting the follower the first time. The follower
    /// holds only the bus's receivers, so it ends when the bus is dropped.
    fn subscribe(&self, bus: &dyn Bus) -> broadcast::Receiver<Arc<Item>> {
        self.feed
            .get_or_init(|| {
                let (sender, _) = broadcast::channel(CLIENT_BUFFER);
                let mut events = bus.listen(EVENT_CREATED);
                let mut enforcements = bus.listen(ENFORCEMENT_CREATED);
                let feed = sender.clone();
                tokio::spawn(async move {
                    // Each receiver first says it is connected; only a reconnect is news.
                    let mut connected = [false; 2];
                    loop {
                        let (from, delivery) = tokio::select! {
                            d = events.recv() => (0, d),
                            d = enforcements.recv() => (1, d),
                        };
                        let item = match delivery {
                            None => break,
                            Some(Delivery::Connected) if !connected[from] => {
                                connected[from] = true;
                                continue;
                            }
                            Some(Delivery::Connected) => Item {
                                kind: "resync",
                                id: String::new(),
                                data: json!({"message": "the bus (re)connected: messages may have been missed"}),
                            },
                            Some(Delivery::Message(message)) => {
                                let Some(item) =
                                    to_item(&message.routing_key, message.message_id, message.body.to_value())
                                else {
                                    continue;
                                };
                                item
                            }
                        };
                        // No stream listening is no error.
                        let _ = feed.send(Arc::new(item));
                    }
                });
                sender
            })
            .subscribe()
    }
}

/// A bus message as the stream sends it: the API's shapes (`EventOut`, `EnforcementOut`), times
/// in RFC 3339.
fn to_item(routing_key: &str, id: String, mut data: Value) -> Option<Item> {
    let kind = match routing_key {
        EVENT_CREATED => "event",
        ENFORCEMENT_CREATED => {
            // Only scheduled enforcements are published; failed ones are stored only.
            data["status"] = json!("scheduled");
            "enforcement"
        }
        _ => return None,
    };
    if let Some(micros) = data.get("created_at").and_then(Value::as_i64) {
        data["created_at"] = json!(rfc3339(micros));
    }
    Some(Item { kind, id, data })
}

/// Follows `receiver` as SSE events until the client leaves; `slot` is held as long.
fn events(
    receiver: broadcast::Receiver<Arc<Item>>,
    slot: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((receiver, slot), |(mut receiver, slot)| async move {
        let event = match receiver.recv().await {
            Ok(item) => {
                let event = Event::default().event(item.kind).json_data(&item.data).unwrap_or_default();
                if item.id.is_empty() { event } else { event.id(&item.id) }
            }
            Err(broadcast::error::RecvError::Lagged(dropped)) => Event::default().event("dropped").data(
                json!({"dropped": dropped, "message": "this client fell behind; the oldest messages were dropped"})
                    .to_string(),
            ),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (receiver, slot)))
    })
}

/// New events and enforcements as server-sent events (`text/event-stream`), until the client
/// leaves. Each SSE event is named `event` (data: an `EventOut`, without `rule`), `enforcement`
/// (data: an `EnforcementOut`, `status` `scheduled`), `dropped` (`{dropped, message}`: this
/// client fell behind and lost that many) or `resync` (the bus reconnected; reload what you
/// show). Comment lines keep a quiet stream open.
#[utoipa::path(get, path = "/api/v1/stream", tag = "events", security(("bearer" = [])),
    responses((status = 200, description = "Server-sent events until the client leaves", content_type = "text/event-stream", body = String),
        (status = 429, description = "The host serves as many streams as it may (`too_many_streams`)", body = ErrorBody)))]
pub async fn stream(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let slot = state.streams.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(ErrorCode::TooManyStreams, format!("this host serves at most {MAX_STREAMS} streams at once"))
    })?;
    let receiver = state.streams.subscribe(state.app.bus.as_ref());
    Ok(Sse::new(events(receiver, slot)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::Method;
    use serde_json::json;

    use super::*;
    use crate::api::explain::tests::Server;

    /// Reads `response` until `done` holds for what has arrived, or fails after 10 s.
    async fn read_until(response: &mut reqwest::Response, done: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done(&text) {
                let chunk = response.chunk().await.unwrap().expect("the stream ended");
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not within 10 s; got {text:?}"));
        text
    }

    #[tokio::test]
    async fn streams_new_events_and_their_enforcements() {
        let server = Server::start().await;
        let rule = json!({"ref": "t.all", "trigger": "t.reading", "action": {"ref": "core.echo"}});
        assert_eq!(server.call(Method::POST, "/api/v1/rules", Some(rule)).await.0, 201);
        let mut response = server.request(Method::GET, "/api/v1/stream").send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");

        let (status, body) = server
            .call(Method::POST, "/api/v1/events", Some(json!({"trigger": "t.reading", "payload": {"celsius": 3}})))
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["event_ids"][0].as_str().unwrap().to_string();
        let text =
            read_until(&mut response, |t| t.contains("event: event\n") && t.contains("event: enforcement\n")).await;
        let data = |kind: &str| -> Value {
            let block = text.split("\n\n").find(|b| b.starts_with(&format!("event: {kind}\n"))).unwrap();
            serde_json::from_str(block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap()
        };
        let event = data("event");
        assert_eq!((event["id"].as_str(), event["trigger"].as_str()), (Some(id.as_str()), Some("t.reading")));
        assert_eq!(event["payload"], json!({"celsius": 3}));
        assert!(event["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");
        let enforcement = data("enforcement");
        assert_eq!(
            (enforcement["event_id"].as_str(), enforcement["rule"].as_str()),
            (Some(id.as_str()), Some("t.all"))
        );
        assert_eq!(enforcement["status"], "scheduled");
    }

    #[tokio::test]
    async fn streams_are_bounded_in_number_and_need_a_token() {
        let server = Server::start().await;
        let anonymous = server.client.get(format!("{}/api/v1/stream", server.base)).send().await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401);
        let mut open = Vec::new();
        for _ in 0..MAX_STREAMS {
            let response = server.request(Method::GET, "/api/v1/stream").send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            open.push(response);
        }
        let (status, body) = server.call(Method::GET, "/api/v1/stream", None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_streams")), "{body}");
    }

    /// A client a whole buffer behind loses the oldest messages and is told how many.
    #[tokio::test]
    async fn a_client_that_falls_behind_is_told_what_it_lost() {
        let (sender, receiver) = broadcast::channel(CLIENT_BUFFER);
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        for n in 0..CLIENT_BUFFER + 5 {
            let item = Item { kind: "event", id: format!("e{n}"), data: json!({"n": n}) };
            sender.send(Arc::new(item)).unwrap();
        }
        drop(sender);
        let body = Sse::new(events(receiver, slot)).into_response().into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
        assert!(blocks[0].starts_with("event: dropped\ndata: {\"dropped\":5,"), "{}", blocks[0]);
        assert_eq!(blocks.len(), 1 + CLIENT_BUFFER);
        assert!(blocks[1].contains("id: e5"), "{}", blocks[1]);
    }
}
