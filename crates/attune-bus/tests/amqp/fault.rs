//! Fault test: the broker connection is cut mid-stream; after recovery every message_id has been
//! delivered (exactly once by message_id: the distinct ids equal the ids sent), none lost, and
//! every outbox row is marked published. Duplicates on the wire are counted and reported.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use attune_bus::{AmqpBus, AmqpOptions, Bus, MemoryOutbox, Message, Relay, RelayOptions, routing};
use serde_json::json;
use tokio::time::Instant;

use crate::common::{Collector, Proxy, broker, broker_addr, count_by_id, unique_name};

async fn wait_until(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn relay_survives_a_cut_connection_without_losing_messages() {
    let _ = broker().await;
    const N: usize = 6_000;
    let exchange = unique_name();
    let proxy = Proxy::start(broker_addr().await).await;
    // The consumer connects directly, not through the proxy.
    let consumer = Collector::bind(&exchange, "#").await;

    let bus = AmqpBus::new(
        &proxy.url(),
        AmqpOptions {
            connect_timeout: Duration::from_secs(2),
            connect_wait: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(800),
            confirm_timeout: Duration::from_secs(5),
            ..AmqpOptions::with_exchange(&exchange)
        },
    )
    .unwrap();
    let outbox = Arc::new(MemoryOutbox::new());
    let sent: HashSet<String> = (0..N)
        .map(|i| {
            let id = format!("{exchange}-{i}");
            let key = if i % 3 == 0 { routing::EVENT_CREATED } else { routing::ENFORCEMENT_CREATED };
            outbox.push(Message::new(key, id.clone(), json!({"seq": i})));
            id
        })
        .collect();
    let relay = Arc::new(Relay::new(
        Arc::clone(&outbox),
        Arc::new(bus) as Arc<dyn Bus>,
        RelayOptions {
            batch_size: 200,
            poll_interval: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ..RelayOptions::default()
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn({
        let relay = Arc::clone(&relay);
        async move {
            relay
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });

    // Once some messages were confirmed, arm a cut in the middle of the next publishes (the
    // proxy drops every connection inside the client-to-broker stream, possibly mid-frame) and
    // keep the broker unreachable a while so the bus goes through failed reconnects with backoff.
    wait_until(Duration::from_secs(30), "the first confirmed messages", || outbox.published_count() >= N / 4).await;
    proxy.cut_after(20_000);
    wait_until(Duration::from_secs(30), "the armed cut", || proxy.cuts() >= 1).await;
    let cut_at = started.elapsed();
    let delivered_at_cut = consumer.count();
    // The round in flight fails at once (connection lost); messages the broker had confirmed
    // before the cut are still marked when it ends. From then on nothing can be confirmed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published_at_cut = outbox.published_count();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let published_while_down = outbox.published_count();
    assert!(published_at_cut < N, "the cut came after the stream ended ({published_at_cut} of {N} published)");
    proxy.set_down(false);
    let up_at = started.elapsed();

    // Recovery: the relay reconnects through the proxy and drains the outbox.
    wait_until(Duration::from_secs(60), "the outbox to drain after recovery", || outbox.unpublished_count() == 0).await;
    let drained_at = started.elapsed();
    assert!(
        consumer.wait_for(Duration::from_secs(30), |r| count_by_id(r).len() >= N).await,
        "only {} distinct of {N} message_ids reached the consumer",
        count_by_id(&consumer.received()).len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // late duplicates, if any, are counted too
    stop.send(()).unwrap();
    let stats = task.await.unwrap();

    let received = consumer.received();
    let counts = count_by_id(&received);
    let distinct: HashSet<String> = counts.keys().cloned().collect();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    println!(
        "FAULT TEST: sent {N}; cut at {cut_at:.2?} ({delivered_at_cut} delivered by then); {published_at_cut} rows \
         marked once the round in flight failed, {published_while_down} at the end of the outage; broker reachable \
         again at {up_at:.2?}; outbox drained at {drained_at:.2?}; {} deliveries, {} distinct ids, {duplicates} duplicates on the wire; proxied connections {}; relay {stats:?}",
        received.len(),
        distinct.len(),
        proxy.accepted()
    );
    assert_eq!(distinct, sent, "lost or unexpected message_ids");
    assert_eq!(outbox.published_count(), N);
    assert_eq!(published_while_down, published_at_cut, "rows were marked published while the broker was unreachable");
    assert!(proxy.accepted() >= 2, "the bus never reconnected through the proxy");
    assert!(stats.failed_rounds >= 1, "the cut did not fail any relay round: {stats:?}");
    for r in &received {
        crate::common::assert_well_formed(r);
    }
    consumer.delete_exchange(&exchange).await;
}
