//! A 3-node cluster of real `strata server` processes on loopback, replication factor 3:
//! leader loss mid-produce, a frozen leader, losing a majority, and a node re-filled from an
//! empty disk. Every check is on what clients were told (acknowledged records) against what
//! the cluster serves afterwards.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use strata_client::{
    Admin, Client, Consumer, ConsumerConfig, Producer, ProducerConfig, Record, TopicSpec, proto,
};
use strata_e2e::{Server, eventually};

fn brokers(servers: &[Server]) -> Vec<String> {
    servers.iter().map(Server::brokers).collect()
}

async fn create_topic(client: &Client, name: &str, partitions: u32) {
    let spec = TopicSpec {
        name: name.into(),
        partitions,
        replication_factor: 3,
        configs: Default::default(),
    };
    Admin::new(client.clone()).create_topic(spec).await.unwrap();
}

/// Index in `servers` of the leader of `topic`/`partition`, as the cluster reports it.
async fn leader_index(client: &Client, topic: &str, partition: u32) -> usize {
    for _ in 0..100 {
        if let Ok(metadata) = client.metadata(&[topic.to_owned()]).await {
            let leader = metadata.topics[0].partitions[partition as usize].leader;
            if leader != 0 {
                return leader as usize - 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader for {topic}/{partition}");
}

/// An acknowledged record: its value, and where the cluster said it landed.
#[derive(Debug, Clone)]
struct Acked {
    value: u64,
    partition: u32,
}

/// Sends `count` keyed records (values `first..`), a few at a time, returning what was
/// acknowledged; `on_progress` sees the running count.
async fn produce(client: &Client, topic: &str, first: u64, count: u64) -> Vec<Acked> {
    let config = ProducerConfig { linger: Duration::from_millis(1), ..ProducerConfig::default() };
    let producer = Producer::new(client.clone(), config);
    let mut acked = Vec::new();
    let mut value = first;
    while value < first + count {
        let mut pending = Vec::new();
        for _ in 0..10 {
            let record =
                Record::new(topic).key(format!("k{}", value % 13)).value(value.to_string());
            pending.push((value, producer.send(record).await.unwrap()));
            value += 1;
        }
        for (value, delivery) in pending {
            let delivered = delivery.await.unwrap_or_else(|e| panic!("record {value} failed: {e}"));
            acked.push(Acked { value, partition: delivered.partition });
        }
    }
    producer.close().await.unwrap();
    acked
}

/// Everything the cluster serves for `topic`, read from the beginning of each partition.
async fn read_all(
    client: &Client,
    topic: &str,
    partitions: u32,
    at_least: usize,
) -> Vec<(u32, u64, String, u64)> {
    let config = ConsumerConfig { auto_commit: false, ..ConsumerConfig::default() };
    let mut consumer = Consumer::new(client.clone(), config);
    consumer.assign((0..partitions).map(|p| (topic.to_owned(), p)).collect()).await.unwrap();
    consumer.seek_to_beginning().await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < at_least && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = std::str::from_utf8(&r.value.unwrap()).unwrap().parse().unwrap();
            out.push((r.partition, r.offset.0, key, value));
        }
    }
    out
}

/// Every acknowledged record is served exactly once, offsets are dense from 0 in every
/// partition, and each key's records come in the order they were acknowledged.
fn check_served(acked: &[Acked], served: &[(u32, u64, String, u64)]) {
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (p, offset, _, _) in served {
        by_partition.entry(*p).or_default().push(*offset);
    }
    for (p, offsets) in &by_partition {
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, &expected, "partition {p} offsets are not dense from 0");
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (_, _, _, value) in served {
        *seen.entry(*value).or_default() += 1;
    }
    for a in acked {
        assert_eq!(
            seen.get(&a.value),
            Some(&1),
            "acknowledged record {} served {:?} times",
            a.value,
            seen.get(&a.value)
        );
    }
    let mut last_by_key: HashMap<&str, u64> = HashMap::new();
    for (_, _, key, value) in served {
        if let Some(last) = last_by_key.insert(key, *value) {
            assert!(last < *value, "key {key}: {value} served after {last}");
        }
    }
    let partitions: std::collections::BTreeSet<u32> = acked.iter().map(|a| a.partition).collect();
    assert!(!partitions.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_mid_produce_loses_no_acknowledged_record() {
    let mut servers = Server::start_cluster(3);
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    create_topic(&client, "orders", 2).await;
    let leader = leader_index(&client, "orders", 0).await;

    let background = {
        let client = client.clone();
        tokio::spawn(async move { produce(&client, "orders", 0, 1500).await })
    };
    // Let some records through, then SIGKILL partition 0's leader while the producer runs.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!background.is_finished(), "produce finished before the kill; send more records");
    servers[leader].kill9();
    let acked = background.await.unwrap();
    assert_eq!(acked.len(), 1500, "the producer went on after the failover");
    let new_leader = leader_index(&client, "orders", 0).await;
    assert_ne!(new_leader, leader, "a new leader was elected");

    // Reads go on with one node down.
    let served = read_all(&client, "orders", 2, acked.len()).await;
    check_served(&acked, &served);

    // The killed node comes back and catches up: its replicas reach the same high watermarks.
    servers[leader].restart();
    let returned = Client::connect(&[servers[leader].brokers()]).await.unwrap();
    let reference = Admin::new(client.clone()).describe_topic("orders").await.unwrap();
    eventually(Duration::from_secs(20), "the restarted node to catch up", || {
        let rt = tokio::runtime::Handle::current();
        let got = tokio::task::block_in_place(|| {
            rt.block_on(Admin::new(returned.clone()).describe_topic("orders"))
        })
        .ok()?;
        let same = got
            .partitions
            .iter()
            .zip(&reference.partitions)
            .all(|(a, b)| a.high_watermark == b.high_watermark);
        same.then_some(())
    });
    let served = read_all(&client, "orders", 2, acked.len()).await;
    check_served(&acked, &served);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_stop_without_a_majority_and_resume_when_a_node_returns() {
    let mut servers = Server::start_cluster(3);
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    create_topic(&client, "quorum", 1).await;
    let mut acked = produce(&client, "quorum", 0, 100).await;

    servers[1].kill9();
    servers[2].kill9();
    let refused = servers[0]
        .cli(&["produce", "quorum", "--key-separator", ":", "--acks", "all"], "k1:1000\n");
    assert_ne!(refused.status, 0, "a write without a majority must fail");
    assert!(
        refused.stderr.to_lowercase().contains("leader")
            || refused.stderr.to_lowercase().contains("unavailable")
            || refused.stderr.to_lowercase().contains("timed out"),
        "unclear error: {}",
        refused.stderr
    );
    // The survivor still serves what it knows to be committed (a follower learns the commit
    // point with the leader's next message, so possibly not the last few records).
    let alone = Client::connect(&[servers[0].brokers()]).await.unwrap();
    let served = read_all(&alone, "quorum", 1, 100).await;
    assert!(!served.is_empty());
    for (i, r) in served.iter().enumerate() {
        assert_eq!(r.3, acked[i].value, "the survivor serves a prefix of what was acknowledged");
    }

    servers[1].restart();
    acked.extend(produce(&client, "quorum", 100, 100).await);
    let served = read_all(&client, "quorum", 1, acked.len()).await;
    // The refused record may or may not have been stored before the failure was reported
    // (Kafka's at-least-once for unacknowledged writes); acknowledged ones are all there once.
    let served: Vec<_> = served.into_iter().filter(|r| r.3 != 1000).collect();
    let served: Vec<_> = served
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.1 = i as u64;
            r
        })
        .collect();
    check_served(&acked, &served);
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_leader_is_replaced_and_a_wiped_node_is_refilled() {
    let mut servers = Server::start_cluster(3);
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    create_topic(&client, "frozen", 1).await;
    let mut acked = produce(&client, "frozen", 0, 200).await;

    // SIGSTOP past the election timeout: the others elect a new leader and writes go on.
    let leader = leader_index(&client, "frozen", 0).await;
    servers[leader].pause();
    acked.extend(produce(&client, "frozen", 200, 200).await);
    servers[leader].resume();
    let new_leader = leader_index(&client, "frozen", 0).await;
    assert_ne!(new_leader, leader);
    let served = read_all(&client, "frozen", 1, acked.len()).await;
    check_served(&acked, &served);

    // A follower loses its disk: it comes back empty and is re-filled from its peers.
    let follower = (0..3).find(|&i| i != new_leader).unwrap();
    servers[follower].kill9();
    std::fs::remove_dir_all(&servers[follower].data_dir).unwrap();
    servers[follower].restart();
    let wiped = Client::connect(&[servers[follower].brokers()]).await.unwrap();
    let hw = acked.len() as u64;
    eventually(Duration::from_secs(30), "the wiped node to be re-filled", || {
        let rt = tokio::runtime::Handle::current();
        let got = tokio::task::block_in_place(|| {
            rt.block_on(Admin::new(wiped.clone()).describe_topic("frozen"))
        })
        .ok()?;
        (got.partitions[0].high_watermark == hw).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn group_offsets_survive_the_loss_of_the_coordinator() {
    let mut servers = Server::start_cluster(3);
    let all = brokers(&servers).join(",");
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    create_topic(&client, "billing", 2).await;
    let acked = produce(&client, "billing", 0, 100).await;
    assert_eq!(acked.len(), 100);

    let first = strata_e2e::cli(
        &all,
        &[
            "consume",
            "billing",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "60",
            "--timeout",
            "20s",
        ],
        "",
    )
    .ok();
    assert_eq!(first.stdout.lines().count(), 60);

    // The coordinator is the controller's leader: take it away.
    let status = strata_e2e::cli(&all, &["cluster", "status", "--format", "json"], "").ok();
    let controller = status
        .json_lines()
        .iter()
        .find(|l| l["kind"] == "node" && l["controller"] == true)
        .map(|l| l["node"].as_u64().unwrap())
        .expect("a controller leader");
    servers[controller as usize - 1].kill9();
    let survivors: Vec<String> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 != controller - 1)
        .map(|(_, s)| s.brokers())
        .collect();
    let survivors = survivors.join(",");

    // The committed offsets are still there, and the group resumes exactly where it was.
    let describe =
        strata_e2e::cli(&survivors, &["group", "describe", "g", "--format", "json"], "").ok();
    let lag: u64 = describe.json_lines().iter().filter_map(|l| l["lag"].as_u64()).sum();
    assert_eq!(lag, 40, "{}", describe.stdout);
    let rest = strata_e2e::cli(
        &survivors,
        &[
            "consume",
            "billing",
            "--group",
            "g",
            "--max-messages",
            "40",
            "--timeout",
            "20s",
            "--format",
            "json",
        ],
        "",
    )
    .ok();
    let values: std::collections::BTreeSet<u64> =
        rest.json_lines().iter().map(|l| l["value"].as_str().unwrap().parse().unwrap()).collect();
    let consumed_first: std::collections::BTreeSet<u64> =
        first.stdout.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(values.len(), 40);
    assert!(values.is_disjoint(&consumed_first), "records consumed twice across the failover");
}

#[tokio::test(flavor = "multi_thread")]
async fn leadership_moves_on_request_and_rebalances_back() {
    let servers = Server::start_cluster(3);
    let all = brokers(&servers).join(",");
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    create_topic(&client, "moves", 3).await;
    let leaders = |client: Client| async move {
        let metadata = client.metadata(&["moves".to_owned()]).await.unwrap();
        metadata.topics[0]
            .partitions
            .iter()
            .map(|p| (p.leader, p.replicas.clone()))
            .collect::<Vec<_>>()
    };
    let before = leaders(client.clone()).await;
    let (leader, replicas) = before[0].clone();
    let target = *replicas.iter().find(|&&r| r != leader).unwrap();

    strata_e2e::cli(
        &all,
        &["cluster", "elect-leader", "moves", "0", "--node", &target.to_string()],
        "",
    )
    .ok();
    let moved = leaders(client.clone()).await;
    assert_eq!(moved[0].0, target, "partition 0 is led by the node asked for");
    // Writes go on through the new leader.
    let mut acked = produce(&client, "moves", 0, 30).await;
    assert_eq!(acked.len(), 30);

    // Only the leader serves reads: a follower refuses a fetch and an offset lookup, naming
    // the leader, and a client that knows only that follower reads through the leader.
    let follower = &servers[*replicas.iter().find(|&&r| r != target).unwrap() as usize - 1];
    let leader_addr = &servers[target as usize - 1].brokers();
    let mut raw =
        proto::broker_client::BrokerClient::connect(format!("http://{}", follower.brokers()))
            .await
            .unwrap();
    let fetch = proto::FetchRequest {
        topic: "moves".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        ..Default::default()
    };
    // The follower learns the new leader from its first message; until then it serves.
    let mut refused = None;
    for _ in 0..50 {
        match raw.fetch(fetch.clone()).await {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let refused = refused.expect("the follower refuses the fetch once it knows the leader");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains(&format!("leader is node {target} at {leader_addr}")),
        "{refused:?}"
    );
    let lookup =
        proto::ListOffsetsRequest { topic: "moves".into(), partition: 0, ..Default::default() };
    assert_eq!(raw.list_offsets(lookup).await.unwrap_err().code(), tonic::Code::Unavailable);
    let through_follower = Client::connect(&[follower.brokers()]).await.unwrap();
    acked.extend(produce(&through_follower, "moves", 30, 30).await);
    check_served(&acked, &read_all(&through_follower, "moves", 3, 60).await);

    strata_e2e::cli(&all, &["cluster", "rebalance-leaders"], "").ok();
    let rebalanced = leaders(client.clone()).await;
    for (leader, replicas) in &rebalanced {
        assert_eq!(*leader, replicas[0], "every partition is back on its preferred replica");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_nodes_expose_raft_metrics_and_readiness() {
    let metrics: Vec<String> = (0..3).map(|_| strata_e2e::free_addr()).collect();
    let servers =
        Server::start_cluster_with(3, |i| vec!["--metrics-listen".to_owned(), metrics[i].clone()]);
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    create_topic(&client, "watched", 1).await;
    produce(&client, "watched", 0, 50).await;
    let leader = leader_index(&client, "watched", 0).await;

    for (i, addr) in metrics.iter().enumerate() {
        eventually(Duration::from_secs(10), "the node to be ready", || {
            (strata_e2e::http_get(addr, "/ready").0 == 200).then_some(())
        });
        // Followers learn the commit point just after the leader answered the producer.
        eventually(Duration::from_secs(10), "the node to apply every record", || {
            let (_, page) = strata_e2e::http_get(addr, "/metrics");
            page.lines()
                .any(|l| {
                    l.starts_with("strata_partition_log_end_offset")
                        && l.contains("watched")
                        && l.ends_with(" 50")
                })
                .then_some(())
        });
        let (_, page) = strata_e2e::http_get(addr, "/metrics");
        let line = |name: &str| {
            page.lines()
                .find(|l| l.starts_with(name) && l.contains("topic=\"watched\""))
                .unwrap_or_else(|| panic!("node {} has no {name} for watched:\n{page}", i + 1))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        };
        assert_eq!(
            line("strata_raft_leader") as usize,
            leader + 1,
            "node {} agrees on the leader",
            i + 1
        );
        assert!(line("strata_raft_term") >= 1.0);
        assert_eq!(
            line("strata_partition_log_end_offset"),
            50.0,
            "node {} has the high watermark",
            i + 1
        );
        assert!(
            page.contains("strata_raft_term{topic=\"__controller\""),
            "controller series on node {}",
            i + 1
        );
        if i == leader {
            eventually(Duration::from_secs(10), "followers to catch up", || {
                let (_, page) = strata_e2e::http_get(addr, "/metrics");
                let lags: Vec<&str> = page
                    .lines()
                    .filter(|l| l.starts_with("strata_raft_replica_lag_entries"))
                    .collect();
                (lags.len() == 2 && lags.iter().all(|l| l.ends_with(" 0"))).then_some(())
            });
        }
    }
}

/// One node's view of partition 0 of `topic`: (log start, high watermark).
async fn local_partition_view(server: &Server, topic: &str) -> Option<(u64, u64)> {
    let client = Client::connect(&[server.brokers()]).await.ok()?;
    let described = Admin::new(client).describe_topic(topic).await.ok()?;
    let p = &described.partitions[0];
    Some((p.log_start_offset, p.high_watermark))
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| rt.block_on(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_purges_replicated_logs_and_a_wiped_node_restarts_from_the_snapshot() {
    let mut servers = Server::start_cluster(3);
    let all = brokers(&servers).join(",");
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    let spec = TopicSpec {
        name: "aged".into(),
        partitions: 1,
        replication_factor: 3,
        configs: [("segment.bytes", "16384"), ("retention.bytes", "40000")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    Admin::new(client.clone()).create_topic(spec).await.unwrap();
    // 500-byte values, in order on one partition: each value is its offset.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let total = 600u64;
    for chunk in (0..total).collect::<Vec<_>>().chunks(20) {
        let mut pending = Vec::new();
        for value in chunk {
            pending.push(
                producer.send(Record::new("aged").key("k").value(format!("{value:0>500}"))).await,
            );
        }
        for delivery in pending {
            delivery.unwrap().await.unwrap();
        }
    }
    producer.close().await.unwrap();

    // Every replica deletes its old segments through a snapshot and a purge.
    for server in &servers {
        eventually(Duration::from_secs(20), "retention on every replica", || {
            let (start, hw) = block_on(local_partition_view(server, "aged"))?;
            (hw == total && start > 0 && total - start < 120).then_some(())
        });
    }

    // A follower loses its disk. The entries it would need are purged everywhere, so it is
    // sent the snapshot and continues from there.
    let leader = leader_index(&client, "aged", 0).await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    servers[follower].kill9();
    std::fs::remove_dir_all(&servers[follower].data_dir).unwrap();
    servers[follower].restart();
    let (wiped_start, _) =
        eventually(Duration::from_secs(30), "the wiped node to install the snapshot", || {
            let view = block_on(local_partition_view(&servers[follower], "aged"))?;
            (view.1 == total && view.0 > 0).then_some(view)
        });

    // Led by the wiped node, the partition serves every retained record from its log start.
    strata_e2e::cli(
        &all,
        &["cluster", "elect-leader", "aged", "0", "--node", &(follower + 1).to_string()],
        "",
    )
    .ok();
    assert_eq!(leader_index(&client, "aged", 0).await, follower);
    let served = read_all(&client, "aged", 1, (total - wiped_start) as usize).await;
    let offsets: Vec<u64> = served.iter().map(|r| r.1).collect();
    assert_eq!(offsets, (wiped_start..total).collect::<Vec<_>>(), "dense from the log start");
    assert!(served.iter().all(|r| r.1 == r.3), "each value is its offset");

    // Writes go on, and a restart starts from the kept snapshot and the log after it.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer
        .send(Record::new("aged").key("k").value(format!("{total:0>500}")))
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await.unwrap();
    servers[follower].kill9();
    servers[follower].restart();
    eventually(Duration::from_secs(30), "the restarted node to rejoin", || {
        let (start, hw) = block_on(local_partition_view(&servers[follower], "aged"))?;
        (hw == total + 1 && start >= wiped_start).then_some(())
    });
}

/// Partitions of `topic` as `server` reports them in `cluster status`: (voters sorted, leader).
async fn partition_groups(server: &Server, topic: &str) -> Option<Vec<(Vec<u64>, u64)>> {
    let client = Client::connect(&[server.brokers()]).await.ok()?;
    let cluster = Admin::new(client).describe_cluster().await.ok()?;
    let groups: Vec<(Vec<u64>, u64)> = cluster
        .partitions
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| {
            let mut voters = p.voters.clone();
            voters.sort_unstable();
            (voters, p.leader)
        })
        .collect();
    Some(groups)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_is_added_replicas_moved_and_a_dead_node_removed_without_losing_records() {
    let mut servers = Server::start_cluster(3);
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    create_topic(&client, "grow", 3).await;
    let mut acked = produce(&client, "grow", 0, 300).await;

    // Node 4 joins the controller; it holds nothing until a partition moves there.
    let newcomer = Server::start_joining(4, &servers);
    let all = brokers(&servers).join(",");
    let added = strata_e2e::cli(&all, &["cluster", "add-node", "4", &newcomer.brokers()], "").ok();
    assert!(added.stdout.contains("1,2,3,4"), "{}", added.stdout);

    // Partition 0 moves from node 1 to node 4: node 4 catches up and votes, node 1 leaves.
    strata_e2e::cli(&all, &["cluster", "move-replicas", "grow", "0", "--replicas", "4,2,3"], "")
        .ok();
    eventually(Duration::from_secs(60), "partition 0 to move to node 4", || {
        let groups = block_on(partition_groups(&newcomer, "grow"))?;
        (groups.len() == 3 && groups[0].0 == [2, 3, 4]).then_some(())
    });
    eventually(Duration::from_secs(30), "node 1 to close its replica of partition 0", || {
        let groups = block_on(partition_groups(&servers[0], "grow"))?;
        (groups[0].0.is_empty() && groups[1].0 == [1, 2, 3]).then_some(())
    });

    // Node 1 dies and is removed: its other replicas go to node 4, the node with fewest.
    servers[0].kill9();
    let rest = [servers[1].brokers(), servers[2].brokers(), newcomer.brokers()];
    let removed = strata_e2e::cli(&rest.join(","), &["cluster", "remove-node", "1"], "").ok();
    assert!(removed.stdout.contains("2,3,4"), "{}", removed.stdout);
    eventually(Duration::from_secs(60), "every partition to move off node 1", || {
        let groups = block_on(partition_groups(&servers[1], "grow"))?;
        let done = groups.len() == 3
            && groups
                .iter()
                .all(|(voters, leader)| voters == &[2, 3, 4] && [2, 3, 4].contains(leader));
        done.then_some(())
    });

    // Groups of three on nodes 2, 3, 4: writes go on with node 2 down too, and every
    // acknowledged record is served once, in order, from the two left.
    servers[1].kill9();
    let left = Client::connect(&[servers[2].brokers(), newcomer.brokers()]).await.unwrap();
    acked.extend(produce(&left, "grow", 300, 100).await);
    let served = read_all(&left, "grow", 3, acked.len()).await;
    check_served(&acked, &served);
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_with_fewer_replicas_than_nodes_serve_clients_from_any_node() {
    let servers = Server::start_cluster(3);
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    let spec = TopicSpec {
        name: "thin".into(),
        partitions: 3,
        replication_factor: 2,
        configs: Default::default(),
    };
    Admin::new(client.clone()).create_topic(spec).await.unwrap();
    // Bad moves are refused and change nothing.
    let all = brokers(&servers).join(",");
    for (replicas, expected) in [("9", "node 9 is not in the cluster"), ("1,1", "distinct")] {
        let refused = strata_e2e::cli(
            &all,
            &["cluster", "move-replicas", "thin", "0", "--replicas", replicas],
            "",
        );
        assert_ne!(refused.status, 0);
        assert!(refused.stderr.contains(expected), "{}", refused.stderr);
    }
    // Each node holds two of the three partitions.
    for server in &servers {
        let groups = partition_groups(server, "thin").await.unwrap();
        assert_eq!(groups.iter().filter(|(voters, _)| !voters.is_empty()).count(), 2);
    }
    // A client that knows one node only finds every leader through it.
    let through_one = Client::connect(&[servers[0].brokers()]).await.unwrap();
    let acked = produce(&through_one, "thin", 0, 300).await;
    let served = read_all(&through_one, "thin", 3, 300).await;
    check_served(&acked, &served);

    // Every node describes every partition, the ones it does not hold included.
    // Leaders reach the nodes that do not hold a partition through the controller, reported
    // once a second, and a replica on a loaded machine can be between leaders for a moment:
    // ask again for a few seconds before judging the leader field.
    for server in &servers {
        let alone = Client::connect(&[server.brokers()]).await.unwrap();
        let mut described = Admin::new(alone.clone()).describe_topic("thin").await.unwrap();
        for _ in 0..50 {
            if described.partitions.iter().all(|p| p.leader != 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            described = Admin::new(alone.clone()).describe_topic("thin").await.unwrap();
        }
        assert_eq!(described.replication_factor, 2);
        let held: u64 = described.partitions.iter().map(|p| p.high_watermark).sum();
        assert_eq!(held, 300, "{described:?}");
        assert!(
            described.partitions.iter().all(|p| p.replicas.len() == 2 && p.leader != 0),
            "{described:?}"
        );
    }

    // The group coordinator (the controller leader) resets offsets and reports lag for
    // partitions it may not hold.
    let admin = Admin::new(client.clone());
    let reset = admin
        .reset_offsets(strata_client::ResetSpec {
            group: "g".into(),
            topics: vec![("thin".into(), vec![])],
            all_topics: false,
            target: strata_client::ResetTarget::Latest,
            execute: true,
        })
        .await
        .unwrap();
    let new: u64 = reset.changes.iter().map(|c| c.new_offset).sum();
    assert_eq!(new, 300);
    let group = admin.describe_group("g").await.unwrap();
    assert_eq!(group.partitions.len(), 3);
    assert!(group.partitions.iter().all(|p| p.lag == 0 && p.log_end_offset > 0), "{group:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_log_is_compacted_and_a_wiped_node_gets_its_snapshot() {
    // A snapshot every 50 controller entries; each offset reset below is one.
    let mut servers =
        Server::start_cluster_with(3, |_| vec!["--controller-snapshot-every".into(), "50".into()]);
    let client = Client::connect(&brokers(&servers)).await.unwrap();
    create_topic(&client, "meta", 1).await;
    produce(&client, "meta", 0, 200).await;
    let admin = Admin::new(client.clone());
    for offset in 0..120 {
        let spec = strata_client::ResetSpec {
            group: "g".into(),
            topics: vec![("meta".into(), vec![])],
            all_topics: false,
            target: strata_client::ResetTarget::ToOffset(offset),
            execute: true,
        };
        admin.reset_offsets(spec).await.unwrap();
    }

    let raft_files = |server: &Server| server.data_dir.join("controller").join("raft");
    for server in &servers {
        let dir = raft_files(server);
        eventually(Duration::from_secs(10), "every node to snapshot and purge", || {
            (dir.join("snapshot").exists() && dir.join("purged").exists()).then_some(())
        });
    }

    // Node 3 loses its disk. The entries that created the topic are purged everywhere, so
    // it learns the topic from the controller's snapshot, then re-fills the partition.
    servers[2].kill9();
    std::fs::remove_dir_all(&servers[2].data_dir).unwrap();
    servers[2].restart();
    eventually(Duration::from_secs(30), "the wiped node to know the topic again", || {
        let (_, hw) = block_on(local_partition_view(&servers[2], "meta"))?;
        (hw == 200).then_some(())
    });
    assert!(raft_files(&servers[2]).join("snapshot").exists(), "the installed snapshot is kept");
    // It kept the snapshot it installed: a restart starts from it.
    servers[2].kill9();
    servers[2].restart();
    eventually(Duration::from_secs(30), "the restarted node to know the topic", || {
        let (_, hw) = block_on(local_partition_view(&servers[2], "meta"))?;
        (hw == 200).then_some(())
    });
    let group = admin.describe_group("g").await.unwrap();
    assert_eq!(group.partitions[0].committed_offset, Some(119));
}
