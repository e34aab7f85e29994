//! Publishing through `AmqpBus`: every message arrives with its properties; routing; returns;
//! bounded failure when the broker is unreachable.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_bus::{AmqpBus, AmqpOptions, Bus, BusError, Message, routing};
use serde_json::json;

use crate::common::{Collector, assert_well_formed, broker, count_by_id, unique_name};

#[tokio::test]
async fn every_message_arrives_with_properties_and_routing() {
    let _ = broker().await;
    let exchange = unique_name();
    let all = Collector::bind(&exchange, "#").await;
    let enforcements = Collector::bind(&exchange, routing::ENFORCEMENT_CREATED).await;
    let bus: Arc<dyn Bus> =
        Arc::new(AmqpBus::connect(&crate::common::amqp_url(), AmqpOptions::with_exchange(&exchange)).await.unwrap());
    bus.ready().await.unwrap();

    const N: usize = 2_000;
    let messages: Vec<Message> = (0..N)
        .map(|i| {
            let key = if i % 2 == 0 { routing::EVENT_CREATED } else { routing::ENFORCEMENT_CREATED };
            Message::new(key, format!("{exchange}-{i}"), json!({"seq": i, "nested": {"tags": ["a", i % 7]}}))
        })
        .collect();
    for chunk in messages.chunks(500) {
        let results = bus.publish_batch(chunk).await;
        assert_eq!(results.len(), chunk.len());
        for result in results {
            result.unwrap();
        }
    }

    assert!(all.wait_for(Duration::from_secs(30), |r| r.len() >= N).await, "only {} of {N} arrived", all.count());
    let expected_enforcements = N / 2;
    assert!(
        enforcements.wait_for(Duration::from_secs(30), |r| r.len() >= expected_enforcements).await,
        "only {} of {expected_enforcements} enforcements arrived",
        enforcements.count()
    );
    tokio::time::sleep(Duration::from_millis(200)).await; // anything extra would show up now

    let received = all.received();
    assert_eq!(received.len(), N, "duplicates or strays on the # queue");
    for (sent, got) in messages.iter().zip(&received) {
        // One channel, one queue: order is preserved.
        assert_well_formed(got);
        assert_eq!(got.message_id.as_deref(), Some(sent.message_id.as_str()));
        assert_eq!(got.routing_key, sent.routing_key);
        assert_eq!(got.body, sent.body.to_value());
    }
    assert!(count_by_id(&received).values().all(|&n| n == 1));

    let routed = enforcements.received();
    assert_eq!(routed.len(), expected_enforcements);
    assert!(routed.iter().all(|r| r.routing_key == routing::ENFORCEMENT_CREATED));
    let routed_ids: HashSet<_> = routed.iter().filter_map(|r| r.message_id.clone()).collect();
    let expected_ids: HashSet<_> = messages
        .iter()
        .filter(|m| m.routing_key == routing::ENFORCEMENT_CREATED)
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(routed_ids, expected_ids);

    all.delete_exchange(&exchange).await;
}

#[tokio::test]
async fn unroutable_is_a_failure_with_mandatory_and_dropped_without() {
    let _ = broker().await;
    let exchange = unique_name();
    let url = crate::common::amqp_url();
    let strict =
        AmqpBus::connect(&url, AmqpOptions { mandatory: true, ..AmqpOptions::with_exchange(&exchange) }).await.unwrap();
    let lenient = AmqpBus::connect(&url, AmqpOptions::with_exchange(&exchange)).await.unwrap();
    let message = Message::new(routing::RULE_DELETED, "unroutable-1", json!({"ref": "pack.rule"}));

    match strict.publish(&message).await {
        Err(BusError::Unroutable { reply_code: 312, reply_text }) => assert_eq!(reply_text, "NO_ROUTE"),
        other => panic!("expected NO_ROUTE, got {other:?}"),
    }
    // Without `mandatory` an exchange with no bound queue drops the message, like the in-process bus.
    lenient.publish(&message).await.unwrap();

    // Once a queue is bound the strict bus succeeds, and the link survived the return.
    let rules = Collector::bind(&exchange, "rule.*").await;
    strict.publish(&message).await.unwrap();
    assert!(rules.wait_for(Duration::from_secs(10), |r| r.len() == 1).await);
    assert_well_formed(&rules.received()[0]);
    rules.delete_exchange(&exchange).await;
}

#[tokio::test]
async fn unreachable_broker_fails_in_bounded_time() {
    let _ = broker().await; // the broker is up; this test uses a closed port on purpose
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
    let options = AmqpOptions {
        connect_wait: Duration::from_millis(800),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..AmqpOptions::with_exchange(unique_name())
    };

    let started = Instant::now();
    match AmqpBus::connect(&url, options.clone()).await {
        Err(BusError::Unavailable(reason)) => assert!(reason.contains(&closed.to_string()), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    // The lazy constructor does no I/O; publishing fails every message, again bounded.
    let bus = AmqpBus::new(&url, options).unwrap();
    let started = Instant::now();
    let messages = vec![Message::new(routing::EVENT_CREATED, "x", json!(null)); 3];
    let results = bus.publish_batch(&messages).await;
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| matches!(r, Err(BusError::Unavailable(_)))), "{results:?}");
    assert!(bus.ready().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    assert!(matches!(AmqpBus::new("not a url", AmqpOptions::default()), Err(BusError::Config(_))));
    // Debug output never shows the password.
    let shown = format!("{:?}", AmqpBus::new("amqp://user:s3cret@127.0.0.1:5672/%2f", AmqpOptions::default()).unwrap());
    assert!(!shown.contains("s3cret"), "{shown}");
}
