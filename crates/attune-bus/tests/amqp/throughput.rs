//! Throughput through `AmqpBus` with publisher confirms: printed, not asserted.

use std::time::Instant;

use attune_bus::{AmqpBus, AmqpOptions, Bus, Message, routing};
use serde_json::json;

use lapin::Channel;
use lapin::options::{ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::common::{amqp_url, broker, declare_exchange, unique_name};

/// An exclusive queue bound with `#` but not consumed, so this process only measures publishing.
async fn sink(channel: &Channel, exchange: &str) -> String {
    declare_exchange(channel, exchange).await;
    let queue = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue.name().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_with_confirms_is_reported() {
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    const N: usize = 10_000;
    for batch in [500, N] {
        let exchange = unique_name();
        let queue = sink(&channel, &exchange).await;
        let bus = AmqpBus::connect(&amqp_url(), AmqpOptions::with_exchange(&exchange)).await.unwrap();
        let messages: Vec<Message> = (0..N)
            .map(|i| {
                Message::new(
                    routing::ENFORCEMENT_CREATED,
                    format!("{exchange}-{i}"),
                    json!({"id": i, "rule": "pack.page_on_5xx", "event": i, "payload": {"status": 500, "host": "web-1.prod"}}),
                )
            })
            .collect();
        let started = Instant::now();
        for chunk in messages.chunks(batch) {
            assert!(bus.publish_batch(chunk).await.iter().all(Result::is_ok));
        }
        let elapsed = started.elapsed();
        println!(
            "THROUGHPUT AmqpBus: {N} persistent messages with confirms, batches of {batch}: {elapsed:.2?} = {:.0} msg/s",
            N as f64 / elapsed.as_secs_f64()
        );
        // Confirmed means enqueued: the queue holds every message.
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions { passive: true, exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(declared.message_count() as usize, N);
        channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await.unwrap();
    }
}
