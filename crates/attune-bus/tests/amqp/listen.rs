//! `Bus::listen` on RabbitMQ: messages of the pattern arrive, others do not, and after the
//! connection is cut the listener reconnects and says `Connected` again before new messages.

use std::time::Duration;

use attune_bus::{AmqpBus, AmqpOptions, Bus, Delivery, Message};
use serde_json::json;
use tokio::sync::mpsc::Receiver;

use crate::common::{Proxy, broker_addr, unique_name};

async fn next(deliveries: &mut Receiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), deliveries.recv()).await.expect("a delivery in 10 s").unwrap()
}

#[tokio::test]
async fn listener_hears_its_pattern_and_reconnects_after_a_cut() {
    let exchange = unique_name();
    let proxy = Proxy::start(broker_addr().await).await;
    let options = AmqpOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..AmqpOptions::with_exchange(&exchange)
    };
    // The listener goes through the proxy, the publisher directly.
    let listening = AmqpBus::new(&proxy.url(), options.clone()).unwrap();
    let publisher = AmqpBus::new(&crate::common::amqp_url(), options.clone()).unwrap();
    let mut deliveries = listening.listen("rule.*");
    assert_eq!(next(&mut deliveries).await, Delivery::Connected);

    let other = Message::new("event.created", "e1", json!({}));
    let change = Message::new("rule.created", "r1", json!({"rule": "p.r"}));
    assert!(publisher.publish_batch(&[other, change.clone()]).await.iter().all(Result::is_ok));
    assert_eq!(next(&mut deliveries).await, Delivery::Message(change));

    // Cut every proxied connection (the next client byte through the proxy trips it).
    proxy.cut_after(0);
    let tripwire = AmqpBus::new(&proxy.url(), AmqpOptions { connect_wait: Duration::from_secs(1), ..options }).unwrap();
    let _ = tripwire.ready().await;
    assert!(proxy.cuts() >= 1);
    proxy.set_down(false);
    assert_eq!(next(&mut deliveries).await, Delivery::Connected);

    let later = Message::new("rule.deleted", "r2", json!({"rule": "p.r"}));
    assert!(publisher.publish(&later).await.is_ok());
    assert_eq!(next(&mut deliveries).await, Delivery::Message(later));
}
