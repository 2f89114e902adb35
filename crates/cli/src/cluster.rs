//! `strata cluster …`: status, leadership, adding and removing nodes.

use clap::Subcommand;
use serde_json::json;
use strata_client::{Admin, Client};

use crate::output::{Format, Table};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, the controller, and each partition's leader and replicas.
    Status,
    /// Moves a partition's leadership to NODE (one of its replicas).
    ElectLeader {
        topic: String,
        partition: u32,
        /// Node id that should lead.
        #[arg(long)]
        node: u64,
    },
    /// Gives each partition back to its preferred replica (the first listed), spreading
    /// leaders over the nodes again after failovers.
    RebalanceLeaders,
    /// Adds a node, already started with `--node-id ID` and `--peers` naming the cluster and
    /// itself. It holds no partition until topics are created or replicas moved there.
    AddNode {
        /// The new node's id (above the lowest member's).
        node_id: u64,
        /// HOST:PORT it listens on.
        address: String,
    },
    /// Removes a node (up or down); its replicas move to the nodes holding the fewest.
    /// Stop it afterwards.
    RemoveNode { node_id: u64 },
    /// Moves a partition's replicas to other nodes (the first listed is the preferred
    /// leader); `cluster status` shows VOTERS reaching REPLICAS as the data follows.
    MoveReplicas {
        topic: String,
        partition: u32,
        /// Node ids, comma-separated: `--replicas 2,3,4`.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
    },
}

pub async fn run(command: &ClusterCommand, client: &Client, format: Format) -> anyhow::Result<()> {
    match command {
        ClusterCommand::AddNode { node_id, address } => {
            let nodes = Admin::new(client.clone()).add_node(*node_id, address).await?;
            print_nodes("added", *node_id, &nodes, format);
        }
        ClusterCommand::MoveReplicas { topic, partition, replicas } => {
            Admin::new(client.clone()).move_replicas(topic, *partition, replicas).await?;
            let list: Vec<String> = replicas.iter().map(u64::to_string).collect();
            let mut table = Table::new(&["TOPIC", "PARTITION", "REPLICAS", "RESULT"]);
            table.row(
                vec![topic.clone(), partition.to_string(), list.join(","), "moving".into()],
                json!({"topic": topic, "partition": partition, "replicas": replicas,
                    "result": "moving"}),
            );
            table.print(format);
        }
        ClusterCommand::RemoveNode { node_id } => {
            let nodes = Admin::new(client.clone()).remove_node(*node_id).await?;
            print_nodes("removed", *node_id, &nodes, format);
        }
        ClusterCommand::ElectLeader { topic, partition, node } => {
            let (leader, term) = elect(client, topic, *partition, *node).await?;
            let mut table = Table::new(&["TOPIC", "PARTITION", "LEADER", "TERM"]);
            table.row(
                vec![topic.clone(), partition.to_string(), leader.to_string(), term.to_string()],
                json!({"topic": topic, "partition": partition, "leader": leader, "term": term}),
            );
            table.print(format);
        }
        ClusterCommand::RebalanceLeaders => {
            let metadata = client.metadata(&[]).await?;
            let mut table = Table::new(&["TOPIC", "PARTITION", "FROM", "TO", "RESULT"]);
            let mut failed = 0;
            for t in &metadata.topics {
                for p in &t.partitions {
                    let Some(&preferred) = p.replicas.first() else { continue };
                    if p.leader == preferred {
                        continue;
                    }
                    let result = match elect(client, &t.name, p.partition, preferred).await {
                        Ok(_) => "moved".to_owned(),
                        Err(e) => {
                            failed += 1;
                            format!("failed: {e}")
                        }
                    };
                    table.row(
                        vec![
                            t.name.clone(),
                            p.partition.to_string(),
                            p.leader.to_string(),
                            preferred.to_string(),
                            result.clone(),
                        ],
                        json!({"topic": t.name, "partition": p.partition, "from": p.leader,
                            "to": preferred, "result": result}),
                    );
                }
            }
            table.print(format);
            if failed > 0 {
                anyhow::bail!("{failed} partitions kept their leader; run it again");
            }
        }
        ClusterCommand::Status => {
            let cluster = Admin::new(client.clone()).describe_cluster().await?;
            let mut nodes = Table::new(&["NODE", "ADDRESS", "STATUS", "CONTROLLER", "IN", "OUT"]);
            for n in &cluster.nodes {
                let controller = n.node_id == cluster.controller_id;
                nodes.row(
                    vec![
                        n.node_id.to_string(),
                        n.address.clone(),
                        if n.alive { "up" } else { "down" }.into(),
                        if controller { "yes" } else { "" }.into(),
                        format!(
                            "{} ({:.0} rec/s)",
                            rate(n.produce_bytes_per_s),
                            n.produce_records_per_s
                        ),
                        format!(
                            "{} ({:.0} rec/s)",
                            rate(n.fetch_bytes_per_s),
                            n.fetch_records_per_s
                        ),
                    ],
                    json!({
                        "kind": "node",
                        "node": n.node_id,
                        "address": n.address,
                        "alive": n.alive,
                        "controller": controller,
                        "produce_bytes_per_s": n.produce_bytes_per_s,
                        "produce_records_per_s": n.produce_records_per_s,
                        "fetch_bytes_per_s": n.fetch_bytes_per_s,
                        "fetch_records_per_s": n.fetch_records_per_s,
                    }),
                );
            }
            nodes.print(format);
            let mut partitions = Table::new(&[
                "TOPIC",
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "VOTERS",
                "TERM",
                "HW",
                "REPLICA LAG",
            ]);
            for p in &cluster.partitions {
                let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
                let voters: Vec<String> = p.voters.iter().map(u64::to_string).collect();
                // No voters: the answering node holds no replica, so it knows only the leader.
                let local = |v: String| if p.voters.is_empty() { "-".to_owned() } else { v };
                let lag: Vec<String> =
                    p.lag.iter().map(|l| format!("{}:{}", l.node_id, l.entries)).collect();
                let lag_json: serde_json::Map<String, serde_json::Value> =
                    p.lag.iter().map(|l| (l.node_id.to_string(), json!(l.entries))).collect();
                partitions.row(
                    vec![
                        p.topic.clone(),
                        p.partition.to_string(),
                        if p.leader == 0 { "none".into() } else { p.leader.to_string() },
                        replicas.join(","),
                        local(voters.join(",")),
                        local(p.term.to_string()),
                        local(p.high_watermark.to_string()),
                        lag.join(" "),
                    ],
                    json!({"kind": "partition", "topic": p.topic, "partition": p.partition,
                        "leader": p.leader, "replicas": p.replicas, "voters": p.voters, "term": p.term,
                        "high_watermark": p.high_watermark, "replica_lag": lag_json}),
                );
            }
            if !cluster.partitions.is_empty() {
                if format == Format::Human {
                    crate::output::line("");
                }
                partitions.print(format);
            }
        }
    }
    Ok(())
}

/// One line: what happened to `node`, and the nodes after it.
fn print_nodes(what: &str, node: u64, nodes: &[u64], format: Format) {
    let mut table = Table::new(&["NODE", "RESULT", "NODES"]);
    let list: Vec<String> = nodes.iter().map(u64::to_string).collect();
    table.row(
        vec![node.to_string(), what.to_owned(), list.join(",")],
        json!({"node": node, "result": what, "nodes": nodes}),
    );
    table.print(format);
}

/// Asks `node` to become the leader of a partition, connecting to it directly.
async fn elect(
    client: &Client,
    topic: &str,
    partition: u32,
    node: u64,
) -> anyhow::Result<(u64, u64)> {
    let metadata = client.metadata(&[]).await?;
    let Some(broker) = metadata.brokers.iter().find(|b| b.node_id == node) else {
        anyhow::bail!("no node {node} in the cluster");
    };
    let target = Client::connect(&[broker.address.as_str()]).await?;
    let reply = Admin::new(target).elect_leader(topic, partition).await?;
    Ok((reply.leader, reply.term))
}

/// Bytes per second for people: `12.3 MB/s`.
fn rate(bytes_per_s: f64) -> String {
    match bytes_per_s {
        b if b >= 1e9 => format!("{:.1} GB/s", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB/s", b / 1e3),
        b => format!("{b:.0} B/s"),
    }
}
