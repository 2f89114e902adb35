//! `strata produce`: one record per line of standard input.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::json;
use strata_client::{Acks, Client, Compression, Producer, ProducerConfig, Record};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::output::{Format, line, note};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AcksArg {
    All,
    Leader,
    None,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    /// The key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Header K=V added to every record; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    /// Send every record to this partition instead of choosing by key.
    #[arg(long)]
    partition: Option<u32>,
    /// Compress batches: none, lz4 or zstd.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

pub async fn run(args: &ProduceArgs, client: Client, format: Format) -> anyhow::Result<()> {
    let acks = match args.acks {
        AcksArg::All => Acks::All,
        AcksArg::Leader => Acks::Leader,
        AcksArg::None => Acks::None,
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((k, v)) = h.split_once('=') else { bail!("header {h:?} is not K=V") };
        headers.push((k.to_owned(), Some(bytes::Bytes::from(v.to_owned()))));
    }
    let compression = match args.compression {
        CompressionArg::None => Compression::None,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    };
    let config = ProducerConfig { acks, compression, ..ProducerConfig::default() };
    let producer = Producer::new(client, config);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut deliveries = Vec::new();
    while let Some(text) = lines.next_line().await? {
        let (key, value) = match (&args.key_separator, &args.key) {
            (Some(sep), _) => match text.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
                None => bail!("line {:?} has no key separator {sep:?}", text),
            },
            (None, key) => (key.clone(), text),
        };
        let mut record = Record::new(&args.topic).value(value);
        record.headers = headers.clone();
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        deliveries.push(producer.send(record).await?);
    }
    let mut per_partition: BTreeMap<u32, u64> = BTreeMap::new();
    let mut first_error = None;
    for delivery in deliveries {
        match delivery.await {
            Ok(d) => {
                *per_partition.entry(d.partition).or_default() += 1;
                if format == Format::Json {
                    line(&json!({"topic": args.topic, "partition": d.partition, "offset": d.offset.map(|o| o.0)}).to_string());
                }
            }
            Err(err) if first_error.is_none() => first_error = Some(err),
            Err(_) => {}
        }
    }
    producer.close().await?;
    if let Some(err) = first_error {
        return Err(err.into());
    }
    if format == Format::Human {
        let total: u64 = per_partition.values().sum();
        note(&format!("produced {total} records to {}", args.topic));
    }
    Ok(())
}
