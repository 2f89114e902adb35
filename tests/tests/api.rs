//! The gRPC API and the client crate against a real server: malformed batches, crash
//! recovery, consumer groups sharing partitions, live offset resets, graceful shutdown.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use strata_client::proto::broker_client::BrokerClient;
use strata_client::proto::{FetchRequest, PartitionBatches, ProduceManyRequest, ProduceRequest};
use strata_client::{
    Admin, Client, ClientError, Compression, Consumer, ConsumerConfig, OffsetReset, Producer,
    ProducerConfig, Record, ResetSpec, ResetTarget, TopicSpec,
};
use strata_e2e::Server;
use strata_record::{BatchBuilder, Offset, Timestamp};
use tonic::Code;

async fn create_topic(client: &Client, name: &str, partitions: u32) {
    let spec = TopicSpec {
        name: name.into(),
        partitions,
        replication_factor: 1,
        configs: Default::default(),
    };
    Admin::new(client.clone()).create_topic(spec).await.unwrap();
}

async fn raw(server: &Server) -> BrokerClient<tonic::transport::Channel> {
    BrokerClient::connect(format!("http://{}", server.addr)).await.unwrap()
}

/// A partition's high watermark, from an empty fetch.
async fn high_watermark(
    broker: &BrokerClient<tonic::transport::Channel>,
    topic: &str,
    partition: u32,
) -> u64 {
    let request = FetchRequest {
        topic: topic.into(),
        partition,
        offset: 0,
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 0,
        runs: false,
    };
    broker.clone().fetch(request).await.unwrap().into_inner().high_watermark
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_batches_are_rejected_precisely_and_change_nothing() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "raw", 1).await;
    let mut broker = raw(&server).await;
    let produce = |batches: Vec<Bytes>| ProduceRequest {
        topic: "raw".into(),
        partition: 0,
        acks: 0,
        batches,
    };

    let garbage =
        broker.produce(produce(vec![Bytes::from_static(b"definitely not a record batch")])).await;
    assert_eq!(garbage.unwrap_err().code(), Code::InvalidArgument);
    let mut builder = BatchBuilder::new();
    builder.push(Timestamp(1), None, Some(b"v"), &[]);
    let good = builder.build(Offset(0));
    let mut corrupt = good.to_vec();
    *corrupt.last_mut().unwrap() ^= 0xff;
    // A good batch next to a corrupt one: the whole request is refused.
    let mixed =
        broker.produce(produce(vec![good.clone(), Bytes::from(corrupt)])).await.unwrap_err();
    assert_eq!(mixed.code(), Code::InvalidArgument);
    assert!(mixed.message().contains("CRC"), "{}", mixed.message());
    let empty = broker.produce(produce(vec![])).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    let missing = broker
        .produce(ProduceRequest {
            topic: "raw".into(),
            partition: 9,
            acks: 0,
            batches: vec![good.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let fetch_past_end = broker
        .fetch(FetchRequest {
            topic: "raw".into(),
            partition: 0,
            offset: 5,
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 0,
            runs: false,
        })
        .await
        .unwrap_err();
    assert_eq!(fetch_past_end.code(), Code::OutOfRange);

    let ok = broker.produce(produce(vec![good])).await.unwrap().into_inner();
    assert_eq!(ok.batches[0].base_offset, 0, "the rejected requests stored nothing");
}

/// A consumer reads fetch answers from their HTTP/2 frames (not through tonic's decoder):
/// records come back whole, a refusal keeps its code and message, and an offset past the end
/// is reset by the consumer's policy.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_decodes_fetch_answers_and_refusals_from_frames() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "frames", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let values: Vec<Vec<u8>> = (0..300u32).map(|i| vec![i as u8; 100 + i as usize * 37]).collect();
    let mut deliveries = Vec::new();
    for value in &values {
        deliveries.push(producer.send(Record::new("frames").value(value.clone())).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await.unwrap();

    // Past the end: OUT_OF_RANGE from the server, then the policy's reset (earliest).
    let config = ConsumerConfig { offset_reset: OffsetReset::Earliest, ..Default::default() };
    let mut consumer = Consumer::new(client.clone(), config.clone());
    consumer.assign(vec![("frames".into(), 0)]).await.unwrap();
    consumer.seek("frames", 0, Offset(10_000)).unwrap();
    let mut read = Vec::new();
    while read.len() < values.len() {
        let polled = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert!(!polled.is_empty(), "{} of {} records", read.len(), values.len());
        read.extend(polled);
    }
    for (i, record) in read.iter().enumerate() {
        assert_eq!(record.offset, Offset(i as u64));
        assert_eq!(record.value.as_deref(), Some(&values[i][..]));
    }

    // A topic deleted under the consumer: NOT_FOUND, with the server's message.
    let mut lost = Consumer::new(client.clone(), config);
    lost.assign(vec![("frames".into(), 0)]).await.unwrap();
    Admin::new(client).delete_topic("frames").await.unwrap();
    let refused = lost.poll(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::NotFound), "{refused:?}");
    assert!(refused.to_string().contains("frames"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_answer_in_runs_holds_the_same_batches_back_to_back() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "runs", 1).await;
    // Many small batches: one per record, each awaited.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..40u32 {
        let record = Record::new("runs").value(vec![i as u8; 500 + i as usize]);
        producer.send(record).await.unwrap().await.unwrap();
    }
    producer.close().await.unwrap();
    let mut broker = raw(&server).await;
    let fetch = |runs| FetchRequest {
        topic: "runs".into(),
        offset: 3,
        max_bytes: 1 << 20,
        runs,
        ..Default::default()
    };
    let batches = broker.fetch(fetch(false)).await.unwrap().into_inner();
    let runs = broker.fetch(fetch(true)).await.unwrap().into_inner();
    assert!(batches.runs.is_empty() && runs.batches.is_empty(), "one or the other");
    assert_eq!(batches.batches.len(), 37, "from the batch holding offset 3 on");
    assert_eq!(runs.runs.len(), 1, "one segment, so one run");
    assert_eq!(runs.runs.concat(), batches.batches.concat());
    assert_eq!(runs.high_watermark, 40);
    // The client splits runs back into batches and reads every record once, in order.
    let config = ConsumerConfig { offset_reset: OffsetReset::Earliest, ..Default::default() };
    let mut consumer = Consumer::new(client.clone(), config);
    consumer.assign(vec![("runs".into(), 0)]).await.unwrap();
    let mut read = Vec::new();
    while read.len() < 40 {
        let polled = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert!(!polled.is_empty(), "{} of 40 records", read.len());
        read.extend(polled.into_iter().map(|r| (r.offset, r.value.unwrap().len())));
    }
    let expected: Vec<_> = (0..40u64).map(|i| (Offset(i), 500 + i as usize)).collect();
    assert_eq!(read, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_produces_to_many_partitions_each_answered_on_its_own() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "many", 3).await;
    let mut broker = raw(&server).await;
    let batch = |value: &str| {
        let mut builder = BatchBuilder::new();
        builder.push(Timestamp(1), None, Some(value.as_bytes()), &[]);
        builder.build(Offset(0))
    };
    let entry = |topic: &str, partition: u32, batches: Vec<Bytes>| PartitionBatches {
        topic: topic.into(),
        partition,
        batches,
    };
    let answer = broker
        .produce_many(ProduceManyRequest {
            acks: 0,
            partitions: vec![
                entry("many", 0, vec![batch("a"), batch("b")]),
                entry("many", 9, vec![batch("no such partition")]),
                entry("many", 2, vec![Bytes::from_static(b"not a batch")]),
                entry("many", 1, vec![batch("c")]),
                entry("many", 0, vec![batch("named twice")]),
                entry("nope", 0, vec![batch("no such topic")]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let outcome: Vec<(u32, Code)> =
        answer.partitions.iter().map(|p| (p.partition, Code::from(p.code))).collect();
    assert_eq!(
        outcome,
        vec![
            (0, Code::Ok),
            (9, Code::NotFound),
            (2, Code::InvalidArgument),
            (1, Code::Ok),
            (0, Code::InvalidArgument),
            (0, Code::NotFound),
        ],
        "{answer:?}"
    );
    let offsets: Vec<u64> = answer.partitions[0].batches.iter().map(|b| b.base_offset).collect();
    assert_eq!(offsets, vec![0, 1], "a partition's batches land in request order");
    assert_eq!(answer.partitions[0].log_end_offset, 2);
    assert!(answer.partitions[4].message.contains("more than once"), "{answer:?}");

    // What was answered OK is stored; the refused entries stored nothing.
    let stored = |partition: u32| high_watermark(&broker, "many", partition);
    assert_eq!((stored(0).await, stored(1).await, stored(2).await), (2, 1, 0));
    let empty = broker.produce_many(ProduceManyRequest { acks: 0, partitions: vec![] }).await;
    assert_eq!(empty.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_records_survive_kill_9() {
    produce_then_kill9("durable", 2, 500, 7).await;
}

/// Rounds that carry many partitions go through the node's write-ahead file.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_records_of_many_partitions_survive_kill_9() {
    let write_ahead_bytes = produce_then_kill9("wide", 64, 4000, 1000).await;
    assert!(write_ahead_bytes > 0, "the rounds went through the write-ahead file");
}

/// A power cut, simulated: every round goes through the write-ahead file, the node is
/// SIGKILLed, and each partition's active segment then loses everything written to it since it
/// was created, as if write-back had never reached the disk (the write-ahead file was
/// fdatasynced; the segments were not). The node comes back with another fsync setting and
/// must replay every acknowledged record from the write-ahead file, and serve it.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_records_come_back_from_the_write_ahead_file_after_a_power_cut() {
    let mut server = Server::start_with(&["--write-ahead-min-partitions", "1"]);
    let acked = produce_keyed(&server, "cut", 8, 2000, 100).await;
    server.kill9();
    let topic_dir = server.data_dir.join("topics").join("cut");
    for partition in 0..8 {
        let dir = topic_dir.join(partition.to_string());
        let mut segments: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segments.sort();
        let active = segments.pop().unwrap();
        std::fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(0).unwrap();
    }
    server.restart_with(&["--fsync", "interval:1s"]);

    let records = read_back(&server, "cut", 8, acked.len()).await;
    let seen: BTreeSet<(u32, Offset)> = records.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(seen, acked, "every acknowledged record, exactly once");
    assert!(server.log_text().contains("replayed from the write-ahead file"));
    let left = std::fs::read_dir(server.data_dir.join("wal")).unwrap().count();
    assert_eq!(left, 0, "the replayed files were removed, and no group writes new ones");
}

/// A node that ran long enough to save tail marks: after `kill -9`, each partition's recovery
/// scans only what came after its mark, and every acknowledged record is still served.
#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_recovery_scans_from_the_tail_marks() {
    let mut server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "marked", 2).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let value = Bytes::from(vec![b'v'; 1000]);
    let mut acked = BTreeSet::new();
    let mut send = async |from: u32, to: u32| {
        let mut deliveries = Vec::new();
        for i in from..to {
            let record = Record::new("marked").key(format!("k{}", i % 100)).value(value.clone());
            deliveries.push(producer.send(record).await.unwrap());
        }
        for d in deliveries {
            let d = d.await.unwrap();
            acked.insert((d.partition, d.offset.unwrap()));
        }
    };
    send(0, 5000).await; // ~2.5 MB per partition: past the growth that earns a mark
    let topic_dir = server.data_dir.join("topics").join("marked");
    let marked = || (0..2).all(|p| topic_dir.join(p.to_string()).join("tail.mark").exists());
    for _ in 0..200 {
        if marked() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(marked(), "a tail mark pass (every 2 s) saved both partitions' marks");
    send(5000, 5500).await;
    producer.close().await.unwrap();
    server.kill9();
    server.restart();

    let records = read_back(&server, "marked", 2, acked.len()).await;
    let seen: BTreeSet<(u32, Offset)> = records.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(seen, acked, "every acknowledged record, exactly once");
    let log = server.log_text();
    assert_eq!(log.matches("recovery scan starts at the tail mark").count(), 2, "{log}");
}

/// Sends `records` keyed records (`keys` distinct keys) over `partitions`, SIGKILLs the node
/// once all are acknowledged, restarts it and checks that every acknowledged record is there
/// exactly once, in order per key. Returns the bytes the node's write-ahead files held when it
/// was killed.
async fn produce_then_kill9(topic: &str, partitions: u32, records: u32, keys: u32) -> u64 {
    let mut server = Server::start();
    let acked = produce_keyed(&server, topic, partitions, records, keys).await;
    server.kill9();
    let write_ahead_bytes: u64 = std::fs::read_dir(server.data_dir.join("wal"))
        .unwrap()
        .map(|file| file.unwrap().metadata().unwrap().len())
        .sum();
    server.restart();

    let mut seen = BTreeSet::new();
    let mut values_by_key: std::collections::BTreeMap<Bytes, Vec<u32>> = Default::default();
    for r in read_back(&server, topic, partitions, records as usize).await {
        seen.insert((r.partition, r.offset));
        let v: u32 = std::str::from_utf8(r.value.as_ref().unwrap()).unwrap().parse().unwrap();
        values_by_key.entry(r.key.clone().unwrap()).or_default().push(v);
    }
    assert_eq!(seen, acked, "every acknowledged record, exactly once");
    for values in values_by_key.values() {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "per-key order");
    }
    write_ahead_bytes
}

/// Creates `topic` with `partitions` and sends it `records` records, record `i` with value `i`
/// and key `k{i % keys}`; returns where each acknowledged record landed.
async fn produce_keyed(
    server: &Server,
    topic: &str,
    partitions: u32,
    records: u32,
    keys: u32,
) -> BTreeSet<(u32, Offset)> {
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, topic, partitions).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in 0..records {
        let record = Record::new(topic).key(format!("k{}", i % keys)).value(i.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    let mut acked = BTreeSet::new();
    for d in deliveries {
        let d = d.await.unwrap();
        acked.insert((d.partition, d.offset.unwrap()));
    }
    producer.close().await.unwrap();
    acked
}

/// Reads `count` records from every partition of `topic` from the start, checking that each
/// poll brings some and that no record comes twice.
async fn read_back(
    server: &Server,
    topic: &str,
    partitions: u32,
    count: usize,
) -> Vec<strata_client::ConsumerRecord> {
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig { offset_reset: OffsetReset::Earliest, ..Default::default() },
    );
    consumer.assign((0..partitions).map(|p| (topic.to_owned(), p)).collect()).await.unwrap();
    let mut seen = BTreeSet::new();
    let mut records = Vec::new();
    while records.len() < count {
        let polled = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert!(
            !polled.is_empty(),
            "only {} of {count} acknowledged records after restart:\n{}",
            records.len(),
            server.log_text()
        );
        for r in polled {
            assert!(seen.insert((r.partition, r.offset)), "duplicate {}/{}", r.partition, r.offset);
            records.push(r);
        }
    }
    records
}

async fn poll_until(consumer: &mut Consumer, what: &str, done: impl Fn(&Consumer) -> bool) {
    for _ in 0..100 {
        if done(consumer) {
            return;
        }
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    panic!("timed out waiting for {what}: assignment {:?}", consumer.assignment());
}

#[tokio::test(flavor = "multi_thread")]
async fn group_members_split_partitions_and_take_over() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "shared", 4).await;
    let config = ConsumerConfig {
        group: Some("workers".into()),
        session_timeout: Duration::from_secs(3),
        offset_reset: OffsetReset::Earliest,
        ..Default::default()
    };
    let mut a = Consumer::new(client.clone(), config.clone());
    let mut b = Consumer::new(client.clone(), config);
    a.subscribe(vec!["shared".into()]).await.unwrap();
    poll_until(&mut a, "a to own all 4", |c| c.assignment().len() == 4).await;
    b.subscribe(vec!["shared".into()]).await.unwrap();
    for _ in 0..100 {
        a.poll(Duration::from_millis(50)).await.unwrap();
        b.poll(Duration::from_millis(50)).await.unwrap();
        if a.assignment().len() == 2 && b.assignment().len() == 2 {
            break;
        }
    }
    let owned_a: BTreeSet<_> = a.assignment().into_iter().collect();
    let owned_b: BTreeSet<_> = b.assignment().into_iter().collect();
    assert_eq!((owned_a.len(), owned_b.len()), (2, 2), "split: {owned_a:?} / {owned_b:?}");
    assert!(owned_a.is_disjoint(&owned_b));

    // b leaves cleanly: a takes over everything.
    b.close().await.unwrap();
    poll_until(&mut a, "a to take over all 4", |c| c.assignment().len() == 4).await;

    // A member that dies without leaving is dropped after its session timeout (3 s) and its
    // partitions move to the survivor.
    let mut c = Consumer::new(
        client.clone(),
        ConsumerConfig {
            group: Some("workers".into()),
            session_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    );
    c.subscribe(vec!["shared".into()]).await.unwrap();
    for _ in 0..100 {
        a.poll(Duration::from_millis(50)).await.unwrap();
        c.poll(Duration::from_millis(50)).await.unwrap();
        if c.assignment().len() == 2 {
            break;
        }
    }
    assert_eq!(c.assignment().len(), 2);
    drop(c); // no close, no more heartbeats
    poll_until(&mut a, "a to take over after c's session expired", |c| c.assignment().len() == 4)
        .await;
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_streams_records_as_they_are_committed() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "stream", 1).await;
    let mut broker = raw(&server).await;
    let request = FetchRequest {
        topic: "stream".into(),
        partition: 0,
        offset: 0,
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 0,
        runs: false,
    };
    let mut stream = broker.subscribe(request).await.unwrap().into_inner();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut seen = Vec::new();
    for i in 0..3u64 {
        producer.send(Record::new("stream").value(format!("s{i}"))).await.unwrap().await.unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for batch in &response.batches {
            let batch = strata_record::RecordBatch::new(batch).unwrap();
            seen.extend(batch.records().unwrap().map(|r| r.unwrap().offset().0));
        }
        assert_eq!(response.high_watermark, i + 1);
    }
    assert_eq!(seen, vec![0, 1, 2]);
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_group_follows_an_offset_reset() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "live", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..10 {
        producer.send(Record::new("live").value(format!("m{i}"))).await.unwrap().await.unwrap();
    }
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            group: Some("live-g".into()),
            offset_reset: OffsetReset::Earliest,
            ..Default::default()
        },
    );
    consumer.subscribe(vec!["live".into()]).await.unwrap();
    let mut read = 0;
    while read < 10 {
        read += consumer.poll(Duration::from_secs(2)).await.unwrap().len();
    }
    consumer.commit().await.unwrap();
    let spec = ResetSpec {
        group: "live-g".into(),
        topics: vec![("live".into(), vec![])],
        all_topics: false,
        target: ResetTarget::ToOffset(4),
        execute: true,
    };
    Admin::new(client.clone()).reset_offsets(spec).await.unwrap();
    // The member hears of the reset with its next heartbeat and re-reads from offset 4.
    let mut offsets = Vec::new();
    for _ in 0..50 {
        offsets.extend(
            consumer.poll(Duration::from_millis(200)).await.unwrap().iter().map(|r| r.offset.0),
        );
        if offsets.len() >= 6 {
            break;
        }
    }
    assert_eq!(offsets, (4..10).collect::<Vec<_>>());
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_leaves_clean_logs() {
    let mut server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "calm", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer.send(Record::new("calm").value("x")).await.unwrap().await.unwrap();
    producer.close().await.unwrap();
    drop(client);
    assert_eq!(server.terminate(), Some(0));
    let partition_dir = server.data_dir.join("topics").join("calm").join("0");
    assert!(partition_dir.join("clean-shutdown").exists(), "{}", server.log_text());
    assert!(server.data_dir.join("groups").join("offsets").join("clean-shutdown").exists());
    let write_ahead = std::fs::read_dir(server.data_dir.join("wal")).unwrap().count();
    assert_eq!(write_ahead, 0, "a clean stop leaves no write-ahead file to replay");
    server.restart();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig { offset_reset: OffsetReset::Earliest, ..Default::default() },
    );
    consumer.assign(vec![("calm".into(), 0)]).await.unwrap();
    let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(records.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn members_joining_together_never_share_a_partition() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "crowd", 6).await;
    let config = ConsumerConfig { group: Some("crowd-g".into()), ..Default::default() };
    let mut members: Vec<Consumer> =
        (0..3).map(|_| Consumer::new(client.clone(), config.clone())).collect();
    for m in &mut members {
        m.subscribe(vec!["crowd".into()]).await.unwrap();
    }
    let mut balanced = false;
    for _ in 0..200 {
        for m in &mut members {
            m.poll(Duration::from_millis(30)).await.unwrap();
        }
        let sets: Vec<BTreeSet<_>> =
            members.iter().map(|m| m.assignment().into_iter().collect()).collect();
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                assert!(a.is_disjoint(b), "two members own the same partition: {sets:?}");
            }
        }
        if sets.iter().all(|s| s.len() == 2) {
            balanced = true;
            break;
        }
    }
    assert!(balanced, "6 partitions spread 2/2/2");
    for m in members {
        m.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_from_before_a_reset_cannot_undo_it() {
    use strata_client::proto::{CommitOffsetsRequest, GroupHeartbeatRequest, PartitionOffset};
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "undo", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..10 {
        producer.send(Record::new("undo").value(format!("{i}"))).await.unwrap().await.unwrap();
    }
    producer.close().await.unwrap();
    let mut broker = raw(&server).await;
    let joined = broker
        .group_heartbeat(GroupHeartbeatRequest {
            group_id: "undo-g".into(),
            member_epoch: 0,
            subscribed_topics: vec!["undo".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let commit = |offset: u64, offsets_epoch: u64| CommitOffsetsRequest {
        group_id: "undo-g".into(),
        member_id: joined.member_id.clone(),
        member_epoch: joined.member_epoch,
        offsets: vec![PartitionOffset {
            topic: "undo".into(),
            partition: 0,
            offset,
            metadata: String::new(),
        }],
        offsets_epoch,
    };
    broker.commit_offsets(commit(8, joined.offsets_epoch)).await.unwrap();
    let spec = ResetSpec {
        group: "undo-g".into(),
        topics: vec![("undo".into(), vec![])],
        all_topics: false,
        target: ResetTarget::ToOffset(2),
        execute: true,
    };
    Admin::new(client.clone()).reset_offsets(spec).await.unwrap();
    // The member has not heartbeated since: its commit carries the old offsets epoch.
    let stale = broker.commit_offsets(commit(9, joined.offsets_epoch)).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{}", stale.message());
    let described = Admin::new(client.clone()).describe_group("undo-g").await.unwrap();
    assert_eq!(described.partitions[0].committed_offset, Some(2), "the reset stands");
    // Deleting the topic forgets the group's offsets for it.
    Admin::new(client.clone()).delete_topic("undo").await.unwrap();
    let described = Admin::new(client).describe_group("undo-g").await.unwrap();
    assert!(
        described.partitions.iter().all(|p| p.committed_offset.is_none()),
        "{:?}",
        described.partitions
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_partition_does_not_delay_a_busy_one() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "mixed", 2).await;
    let config = ConsumerConfig { max_wait: Duration::from_secs(5), ..Default::default() };
    let mut consumer = Consumer::new(client.clone(), config);
    consumer.assign(vec![("mixed".into(), 0), ("mixed".into(), 1)]).await.unwrap();
    let producer_client = client.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let producer = Producer::new(producer_client, ProducerConfig::default());
        producer
            .send(Record::new("mixed").partition(1).value("hello"))
            .await
            .unwrap()
            .await
            .unwrap();
        producer.close().await.unwrap();
    });
    let started = std::time::Instant::now();
    let records = consumer.poll(Duration::from_secs(10)).await.unwrap();
    let waited = started.elapsed();
    send.await.unwrap();
    assert_eq!(records.len(), 1);
    // Partition 0's fetch waits up to 5 s for data that never comes; partition 1's record
    // must not wait for it.
    assert!(waited < Duration::from_secs(3), "poll took {waited:?}");
}

/// A batch of `records` records from `producer`, starting at `sequence`.
fn sequenced_batch(producer: i64, sequence: i32, first_value: u32, records: u32) -> Bytes {
    let mut builder = BatchBuilder::new();
    for v in first_value..first_value + records {
        builder.push(Timestamp(1), None, Some(v.to_string().as_bytes()), &[]);
    }
    builder.producer(producer, 0, sequence);
    builder.build(Offset(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_producers_batches_are_written_in_sequence_order_and_retries_once() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "sequenced", 1).await;
    let produce = |batch: Bytes| ProduceRequest {
        topic: "sequenced".into(),
        partition: 0,
        acks: strata_client::proto::Acks::All as i32,
        batches: vec![batch],
    };
    let (first, second) = (sequenced_batch(42, 0, 0, 3), sequenced_batch(42, 3, 3, 2));

    // The second batch arrives first: it waits for the first, then lands after it.
    let mut early = raw(&server).await;
    let second_request = produce(second.clone());
    let ahead = tokio::spawn(async move { early.produce(second_request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ahead.is_finished(), "a batch ahead of its producer's sequence waits");
    let mut broker = raw(&server).await;
    let landed = broker.produce(produce(first.clone())).await.unwrap().into_inner();
    assert_eq!(landed.batches[0].base_offset, 0);
    let landed = ahead.await.unwrap().unwrap().into_inner();
    assert_eq!((landed.batches[0].base_offset, landed.batches[0].last_offset), (3, 4));

    // A retry of either is answered with where it landed, and stores nothing.
    let retried = broker.produce(produce(first)).await.unwrap().into_inner();
    assert_eq!((retried.batches[0].base_offset, retried.batches[0].last_offset), (0, 2));
    assert_eq!(retried.log_end_offset, 5);
    let retried = broker.produce(produce(second)).await.unwrap().into_inner();
    assert_eq!(retried.batches[0].base_offset, 3);
    assert_eq!(retried.log_end_offset, 5);

    // A batch whose predecessors never come is refused after a bounded wait, retriably (they
    // may still be on their way after a failover).
    let gap = broker.produce(produce(sequenced_batch(42, 9, 9, 1))).await.unwrap_err();
    assert_eq!(gap.code(), Code::Aborted, "{}", gap.message());
    assert!(gap.message().contains("did not arrive"), "{}", gap.message());

    // A request may mix the producer's next batch with one that has no producer id.
    let mut plain = BatchBuilder::new();
    plain.push(Timestamp(1), None, Some(b"plain"), &[]);
    let mut mixed = produce(sequenced_batch(42, 5, 5, 1));
    mixed.batches.push(plain.build(Offset(0)));
    let landed = broker.produce(mixed).await.unwrap().into_inner();
    let bases: Vec<u64> = landed.batches.iter().map(|b| b.base_offset).collect();
    assert_eq!(bases, vec![5, 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_batches_land_in_the_order_they_were_sent() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "pipelined", 1).await;
    // Small batches and no linger: many requests in flight at once on the one partition.
    let config = ProducerConfig {
        linger: Duration::ZERO,
        batch_bytes: 256,
        max_in_flight: 5,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut deliveries = Vec::new();
    for i in 0..3000u32 {
        let record = Record::new("pipelined").partition(0).value(i.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, Some(Offset(i as u64)), "record {i}");
    }
    producer.close().await.unwrap();

    let mut consumer = Consumer::new(
        client,
        ConsumerConfig { offset_reset: OffsetReset::Earliest, ..Default::default() },
    );
    consumer.assign(vec![("pipelined".into(), 0)]).await.unwrap();
    let mut values = Vec::new();
    while values.len() < 3000 {
        let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert!(!records.is_empty(), "only {} of 3000 records", values.len());
        for r in records {
            assert_eq!(r.offset, Offset(values.len() as u64));
            values.push(
                std::str::from_utf8(r.value.as_ref().unwrap()).unwrap().parse::<u32>().unwrap(),
            );
        }
    }
    assert_eq!(values, (0..3000).collect::<Vec<_>>(), "every record once, in send order");
}

#[tokio::test(flavor = "multi_thread")]
async fn lingering_batches_go_out_when_every_request_slot_was_taken() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "slots", 20).await;
    // One request slot for twenty partitions whose batches only ever close by linger: each
    // answer must find the batches that became ready while the slots were taken.
    let config = ProducerConfig {
        linger: Duration::from_millis(5),
        max_requests_in_flight: 1,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    for round in 0..10u32 {
        let mut deliveries = Vec::new();
        for p in 0..20u32 {
            let record = Record::new("slots").partition(p).value(format!("{round}-{p}"));
            deliveries.push(producer.send(record).await.unwrap());
            // Batches open one after another, some while both slots are taken.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for d in deliveries {
            let delivered = tokio::time::timeout(Duration::from_secs(20), d)
                .await
                .expect("a lingering batch was never sent")
                .unwrap();
            assert_eq!(delivered.offset, Some(Offset(round as u64)));
        }
    }
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_records_fill_one_partition_batch_at_a_time() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "sticky", 4).await;
    // A 4 KiB batch holds three 1,200-byte records: a fourth would open a second batch.
    let config = ProducerConfig {
        batch_bytes: 4096,
        linger: Duration::from_secs(1),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut deliveries = Vec::new();
    for i in 0..24u32 {
        let record = Record::new("sticky").value(vec![i as u8; 1200]);
        deliveries.push(producer.send(record).await.unwrap());
    }
    let mut partitions = Vec::new();
    for d in deliveries {
        partitions.push(d.await.unwrap().partition);
    }
    producer.close().await.unwrap();
    // Runs of three (one full batch each), partitions taken in turn from a random first one.
    let first = partitions[0];
    let expected: Vec<u32> = (0..24).map(|i| (first + i / 3) % 4).collect();
    assert_eq!(partitions, expected);

    // A batch that leaves before it is full (here: linger 0, one record at a time) moves the
    // sticky partition on too, so a slow producer still spreads its records.
    let config = ProducerConfig { linger: Duration::ZERO, ..ProducerConfig::default() };
    let producer = Producer::new(client.clone(), config);
    let mut slow = Vec::new();
    for i in 0..8u32 {
        let record = Record::new("sticky").value(format!("slow-{i}"));
        slow.push(producer.send(record).await.unwrap().await.unwrap().partition);
    }
    producer.close().await.unwrap();
    let expected: Vec<u32> = (0..8).map(|i| (slow[0] + i) % 4).collect();
    assert_eq!(slow, expected, "one record per batch, partitions in turn");

    // Keyed records still go by key, and an explicit partition wins.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let keyed = producer.send(Record::new("sticky").key("k").value("v")).await.unwrap();
    let keyed_again = producer.send(Record::new("sticky").key("k").value("w")).await.unwrap();
    let explicit = producer.send(Record::new("sticky").partition(3).value("x")).await.unwrap();
    let (keyed, keyed_again) = (keyed.await.unwrap(), keyed_again.await.unwrap());
    assert_eq!(keyed.partition, crc32c::crc32c(b"k") % 4);
    assert_eq!(keyed_again.partition, keyed.partition);
    assert_eq!(explicit.await.unwrap().partition, 3);
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_report_where_each_record_landed() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "callbacks", 3).await;
    // Small batches, so each partition has several in flight, in separate requests.
    let config = ProducerConfig { batch_bytes: 256, ..Default::default() };
    let producer = Producer::new(client.clone(), config);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // A callback that panics is logged; the records batched with it are still answered.
    let panics = Record::new("callbacks").partition(0).value("first");
    producer.send_with_callback(panics, |_| panic!("a careless callback")).await.unwrap();
    for i in 0..300u32 {
        let record = Record::new("callbacks").partition(i % 3).value(format!("{i}"));
        let tx = tx.clone();
        let callback = move |delivered| {
            let _ = tx.send((i, delivered));
        };
        producer.send_with_callback(record, callback).await.unwrap();
    }
    // A record that cannot be placed is answered through its callback too.
    let tx_missing = tx.clone();
    let missing = Record::new("callbacks").partition(7).value("nowhere");
    producer
        .send_with_callback(missing, move |d| drop(tx_missing.send((u32::MAX, d))))
        .await
        .unwrap();
    drop(tx);
    producer.close().await.unwrap();
    // Every callback ran by the time close returned, and each record landed in send order:
    // record i is the (i / 3)-th sent to partition i % 3. A partition's callbacks ran in
    // that order too (the channel keeps the order they ran in).
    let mut answered = BTreeSet::new();
    let mut missing_answered = false;
    let mut last_offset = [None; 3];
    while let Ok((i, delivered)) = rx.try_recv() {
        if i == u32::MAX {
            assert!(delivered.is_err(), "partition 7 of 3 was accepted: {delivered:?}");
            missing_answered = true;
            continue;
        }
        let delivered = delivered.unwrap();
        assert_eq!(delivered.partition, i % 3);
        // Partition 0's first offset went to the record whose callback panicked.
        let first = if i % 3 == 0 { 1 } else { 0 };
        assert_eq!(delivered.offset, Some(Offset(first + u64::from(i / 3))), "record {i}");
        assert!(answered.insert(i), "record {i} answered twice");
        let last = &mut last_offset[delivered.partition as usize];
        assert!(
            *last < delivered.offset,
            "partition {}: {:?} after {last:?}",
            delivered.partition,
            delivered.offset
        );
        *last = delivered.offset;
    }
    assert_eq!(answered.len(), 300);
    assert!(missing_answered, "the failing record's callback never ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_buffer_holds_send_until_earlier_records_are_answered() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "buffered", 1).await;
    // Room for one record of 1,000 bytes: each send waits until the one before it is answered.
    let config =
        ProducerConfig { buffer_bytes: 1500, linger: Duration::ZERO, ..Default::default() };
    let producer = Producer::new(client.clone(), config);
    let value = Bytes::from(vec![b'b'; 1000]);
    let mut previous: Option<strata_client::DeliveryFuture> = None;
    for i in 0..50u64 {
        let delivery = producer.send(Record::new("buffered").value(value.clone())).await.unwrap();
        if let Some(mut earlier) = previous.take() {
            // Polled once: answered already, since its answer freed the room this send took.
            let answered = tokio::time::timeout(Duration::ZERO, &mut earlier).await;
            let delivered =
                answered.expect("send returned before the record before it was answered");
            assert_eq!(delivered.unwrap().offset, Some(Offset(i - 1)));
        }
        previous = Some(delivery);
    }
    assert_eq!(previous.unwrap().await.unwrap().offset, Some(Offset(49)));
    // A record larger than the whole buffer still goes, alone.
    let large = Bytes::from(vec![b'L'; 4000]);
    let delivery = producer.send(Record::new("buffered").value(large)).await.unwrap();
    assert_eq!(delivery.await.unwrap().offset, Some(Offset(50)));
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_given_up_while_waiting_for_room_leaves_the_line() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "line", 1).await;
    let config =
        ProducerConfig { buffer_bytes: 1500, linger: Duration::ZERO, ..Default::default() };
    let producer = std::sync::Arc::new(Producer::new(client.clone(), config));
    let value = || Record::new("line").value(vec![b'l'; 1000]);
    // One record answered first: the producer knows the topic's partitions.
    producer.send(value()).await.unwrap().await.unwrap();
    // Nothing is answered while the node is stopped: the first record keeps the room.
    server.pause();
    let first = producer.send(value()).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), producer.send(value())).await;
    assert!(gave_up.is_err(), "the second send waits for room while the first is unanswered");
    // Behind the one that gave up, the next send gets its turn once room is freed.
    let next = tokio::spawn({
        let producer = producer.clone();
        async move { producer.send(value()).await.unwrap().await }
    });
    server.resume();
    assert_eq!(first.await.unwrap().offset, Some(Offset(1)));
    let next = tokio::time::timeout(Duration::from_secs(20), next).await;
    let next = next.expect("the line moved on without the send that gave up").unwrap();
    assert_eq!(next.unwrap().offset, Some(Offset(2)), "the send that gave up never went");
}

/// Runs `future` to completion on this thread, outside any tokio runtime: what a caller on
/// another executor does.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_works_from_a_thread_outside_the_producers_runtime() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "plain", 1).await;
    let config = ProducerConfig { linger: Duration::ZERO, ..Default::default() };
    let producer = std::sync::Arc::new(Producer::new(client.clone(), config));
    let sender = producer.clone();
    // A plain thread: the topic's first lookup and every request still run on the runtime
    // the producer was made in.
    let thread = std::thread::spawn(move || {
        (0..3)
            .map(|i| {
                let delivery = block_on(sender.send(Record::new("plain").value(format!("{i}"))));
                block_on(delivery.unwrap()).unwrap().offset
            })
            .collect::<Vec<_>>()
    });
    let offsets = tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap();
    assert_eq!(offsets, [Some(Offset(0)), Some(Offset(1)), Some(Offset(2))]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsupported_codec_is_refused_at_send_to_the_caller_and_its_callback() {
    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "gzip", 1).await;
    let config = ProducerConfig { compression: Compression::Gzip, ..Default::default() };
    let producer = Producer::new(client.clone(), config);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let record = Record::new("gzip").value("v");
    let sent = producer.send_with_callback(record, move |d| drop(tx.send(d))).await;
    assert!(matches!(sent, Err(ClientError::InvalidArgument(_))), "{sent:?}");
    let heard = rx.await.unwrap();
    assert!(matches!(heard, Err(ClientError::InvalidArgument(_))), "{heard:?}");
    producer.close().await.unwrap();
    assert_eq!(high_watermark(&raw(&server).await, "gzip", 0).await, 0, "nothing written");
}

/// Sends `message`, whatever it holds, as a ProduceMany call's message: what a client with
/// another protobuf library, or a broken one, could send.
async fn produce_many_raw(
    server: &Server,
    message: Vec<u8>,
) -> Result<strata_client::proto::ProduceManyResponse, tonic::Status> {
    use prost::Message;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Sends its bytes as they are; answers the message's bytes.
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Bytes;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(buf, &item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Bytes;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
            let len = bytes::Buf::remaining(buf);
            Ok(Some(bytes::Buf::copy_to_bytes(buf, len)))
        }
    }

    let channel = tonic::transport::Endpoint::new(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/strata.v1.Broker/ProduceMany");
    let answer = grpc.unary(tonic::Request::new(message), path, Raw).await?;
    Ok(strata_client::proto::ProduceManyResponse::decode(answer.into_inner()).unwrap())
}

/// The broker decodes ProduceMany from the request's frames itself (no copy into tonic's
/// buffer): the answers and errors are tonic's, and a refused request stores nothing.
#[tokio::test(flavor = "multi_thread")]
async fn produce_many_decoded_from_frames_answers_as_tonic_would() {
    use prost::Message;

    let server = Server::start();
    let client = Client::connect(&[server.brokers()]).await.unwrap();
    create_topic(&client, "frames", 1).await;
    let mut builder = BatchBuilder::new();
    builder.push(Timestamp(1), None, Some(b"through the frames"), &[]);
    let request = ProduceManyRequest {
        acks: 0,
        partitions: vec![PartitionBatches {
            topic: "frames".into(),
            partition: 0,
            batches: vec![builder.build(Offset(0))],
        }],
    };

    let garbage = produce_many_raw(&server, vec![0xff; 16]).await.unwrap_err();
    assert_eq!(garbage.code(), Code::Internal, "{garbage:?}");
    let empty = produce_many_raw(&server, Vec::new()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "an empty message is an empty request");
    // Refused from the length prefix: the server's limit is 64 MiB.
    let huge = produce_many_raw(&server, vec![0; 64 * 1024 * 1024 + 1]).await.unwrap_err();
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
    // 100,001 empty partition entries (2 bytes each): counted, then refused undecoded.
    let entries = [0x12u8, 0x00].repeat(100_001);
    let crowded = produce_many_raw(&server, entries).await.unwrap_err();
    assert_eq!(crowded.code(), Code::InvalidArgument, "{crowded:?}");
    assert!(crowded.message().contains("at most 100000 partition entries"), "{crowded:?}");

    let answer = produce_many_raw(&server, request.encode_to_vec()).await.unwrap();
    assert_eq!(answer.partitions.len(), 1);
    assert_eq!(Code::from(answer.partitions[0].code), Code::Ok, "{answer:?}");
    assert_eq!(
        answer.partitions[0].batches[0].base_offset, 0,
        "the refused requests stored nothing"
    );
    assert_eq!(high_watermark(&raw(&server).await, "frames", 0).await, 1);
}
