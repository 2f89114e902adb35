//! `strata cluster status`.

use clap::Subcommand;
use serde_json::json;
use strata_client::{Admin, Client};

use crate::output::{Format, Table};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, the controller, and each partition's leader and replicas.
    Status,
}

pub async fn run(command: &ClusterCommand, client: &Client, format: Format) -> anyhow::Result<()> {
    match command {
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
                "TERM",
                "HW",
                "REPLICA LAG",
            ]);
            for p in &cluster.partitions {
                let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
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
                        p.term.to_string(),
                        p.high_watermark.to_string(),
                        lag.join(" "),
                    ],
                    json!({"kind": "partition", "topic": p.topic, "partition": p.partition,
                        "leader": p.leader, "replicas": p.replicas, "term": p.term,
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

/// Bytes per second for people: `12.3 MB/s`.
fn rate(bytes_per_s: f64) -> String {
    match bytes_per_s {
        b if b >= 1e9 => format!("{:.1} GB/s", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB/s", b / 1e3),
        b => format!("{b:.0} B/s"),
    }
}
