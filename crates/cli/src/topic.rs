//! `strata topic …`

use clap::Subcommand;
use serde_json::json;
use strata_client::proto::TopicDescription;
use strata_client::{Admin, Client, TopicSpec};

use crate::output::{Format, Table, line, note};
use crate::parse;

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Copies of each partition [default: 1 on a single node, every node in a cluster].
        #[arg(long)]
        replication_factor: Option<u32>,
        /// Topic setting KEY=VALUE (retention.ms, retention.bytes, max.message.bytes,
        /// segment.bytes, segment.ms); repeatable.
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Partitions, leaders, replicas, offsets and settings of a topic.
    Describe { name: String },
    /// Change topic settings.
    Alter {
        name: String,
        #[arg(long = "config", required = true)]
        configs: Vec<String>,
    },
    /// Delete a topic and all its data.
    Delete { name: String },
}

fn print_description(description: &TopicDescription, format: Format) {
    let mut table = Table::new(&[
        "TOPIC",
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "LOG-START",
        "HIGH-WATERMARK",
        "SIZE",
    ]);
    for p in &description.partitions {
        let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
        table.row(
            vec![
                description.name.clone(),
                p.partition.to_string(),
                p.leader.to_string(),
                replicas.join(","),
                p.log_start_offset.to_string(),
                p.high_watermark.to_string(),
                p.size_bytes.to_string(),
            ],
            json!({
                "topic": description.name,
                "partition": p.partition,
                "leader": p.leader,
                "replicas": p.replicas,
                "log_start_offset": p.log_start_offset,
                "high_watermark": p.high_watermark,
                "size_bytes": p.size_bytes,
            }),
        );
    }
    table.print(format);
    if format == Format::Human {
        let mut configs: Vec<String> =
            description.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        configs.sort();
        line(&format!("configs: {}", configs.join(" ")));
    }
}

pub async fn run(command: &TopicCommand, client: &Client, format: Format) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let replication_factor = &replication_factor.unwrap_or(0);
            let spec = TopicSpec {
                name: name.clone(),
                partitions: *partitions,
                replication_factor: *replication_factor,
                configs: parse::key_values(configs)?,
            };
            let description = admin.create_topic(spec).await?;
            if format == Format::Human {
                note(&format!("created topic {name} with {partitions} partitions"));
            }
            print_description(&description, format);
        }
        TopicCommand::List => {
            let mut table = Table::new(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"]);
            for t in admin.list_topics().await? {
                table.row(
                    vec![t.name.clone(), t.partitions.to_string(), t.replication_factor.to_string()],
                    json!({"name": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor}),
                );
            }
            table.print(format);
        }
        TopicCommand::Describe { name } => {
            print_description(&admin.describe_topic(name).await?, format)
        }
        TopicCommand::Alter { name, configs } => {
            let description = admin.alter_topic(name, parse::key_values(configs)?).await?;
            print_description(&description, format);
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(name).await?;
            match format {
                Format::Human => note(&format!("deleted topic {name}")),
                Format::Json => line(&json!({"deleted": name}).to_string()),
            }
        }
    }
    Ok(())
}
