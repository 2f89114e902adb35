//! `strata cluster status`.

use clap::Subcommand;
use serde_json::json;
use strata_client::Client;

use crate::output::{Format, Table};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, the controller, and each partition's leader and replicas.
    Status,
}

pub async fn run(command: &ClusterCommand, client: &Client, format: Format) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status => {
            let metadata = client.metadata(&[]).await?;
            let mut nodes = Table::new(&["NODE", "ADDRESS", "STATUS", "CONTROLLER"]);
            for b in &metadata.brokers {
                let controller = b.node_id == metadata.controller_id;
                nodes.row(
                    vec![b.node_id.to_string(), b.address.clone(), "up".into(), if controller { "yes" } else { "" }.into()],
                    json!({"kind": "node", "node": b.node_id, "address": b.address, "alive": true, "controller": controller}),
                );
            }
            nodes.print(format);
            let mut partitions = Table::new(&["TOPIC", "PARTITION", "LEADER", "REPLICAS"]);
            for t in &metadata.topics {
                for p in &t.partitions {
                    let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
                    partitions.row(
                        vec![t.name.clone(), p.partition.to_string(), p.leader.to_string(), replicas.join(",")],
                        json!({"kind": "partition", "topic": t.name, "partition": p.partition, "leader": p.leader, "replicas": p.replicas}),
                    );
                }
            }
            if !metadata.topics.is_empty() {
                if format == Format::Human {
                    crate::output::line("");
                }
                partitions.print(format);
            }
        }
    }
    Ok(())
}
