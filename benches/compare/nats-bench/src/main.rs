//! JetStream's side of `benches/compare/run.sh`: publishes RECORDS records of SIZE bytes to a
//! file-backed stream, every publish acknowledged by the server, with up to WINDOW
//! acknowledgements outstanding (a pipelined producer, like `strata-bench produce`); then
//! reads them all back through a pull consumer without acks. Prints one line:
//! `produce_records_per_s consume_records_per_s`.
//!
//!     nats-bench URL RECORDS SIZE WINDOW

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

const STREAM: &str = "BENCH";
const SUBJECT: &str = "bench";

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, records, size, window] = args.as_slice() else {
        return Err("usage: nats-bench URL RECORDS SIZE WINDOW".into());
    };
    let (records, size, window): (u64, usize, usize) =
        (records.parse()?, size.parse()?, window.parse()?);
    let js = jetstream::new(async_nats::connect(url.as_str()).await?);
    let _ = js.delete_stream(STREAM).await;
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![SUBJECT.to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;

    let payload = Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    for _ in 0..records {
        pending.push_back(js.publish(SUBJECT, payload.clone()).await?);
        if pending.len() >= window
            && let Some(ack) = pending.pop_front()
        {
            ack.await?;
        }
    }
    while let Some(ack) = pending.pop_front() {
        ack.await?;
    }
    let produce = records as f64 / started.elapsed().as_secs_f64();

    let reader = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = reader.messages().await?;
    let mut read = 0u64;
    while read < records {
        match messages.next().await {
            Some(message) => {
                message?;
                read += 1;
            }
            None => break,
        }
    }
    let consume = read as f64 / started.elapsed().as_secs_f64();
    println!("{produce:.0} {consume:.0}");
    Ok(())
}
