//! `strata consume`: print records, alone (all or one partition) or as a group member.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::{Map, Value, json};
use strata_client::{Client, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};
use strata_record::Offset;
use tokio::time::Instant;

use crate::output::{Format, line};
use crate::parse;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Consume as a member of this group (committed offsets, shared partitions).
    #[arg(long)]
    group: Option<String>,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the earliest retained record (where the group has no committed offset).
    #[arg(long, conflicts_with_all = ["offset", "from_time"])]
    from_beginning: bool,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition", conflicts_with = "from_time")]
    offset: Option<u64>,
    /// Start at the first record at or after this time (RFC 3339, or ms since the epoch).
    #[arg(long)]
    from_time: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record arrived for this long (e.g. 5s).
    #[arg(long)]
    timeout: Option<String>,
}

fn text(bytes: &Option<bytes::Bytes>) -> Value {
    match bytes {
        Some(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        None => Value::Null,
    }
}

fn print(record: &ConsumerRecord, format: Format) {
    match format {
        Format::Human => {
            let value = record
                .value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            line(&value);
        }
        Format::Json => {
            let headers: Map<String, Value> =
                record.headers.iter().map(|(k, v)| (k.clone(), text(v))).collect();
            line(
                &json!({
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset.0,
                    "timestamp": record.timestamp.0,
                    "key": text(&record.key),
                    "headers": headers,
                    "value": text(&record.value),
                })
                .to_string(),
            );
        }
    }
}

pub async fn run(args: &ConsumeArgs, client: Client, format: Format) -> anyhow::Result<()> {
    let idle_limit = args.timeout.as_deref().map(parse::duration).transpose()?;
    let from_time = args.from_time.as_deref().map(parse::datetime).transpose()?;
    let config = ConsumerConfig {
        group: args.group.clone(),
        offset_reset: if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest },
        client_id: "strata-cli".into(),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    match (&args.group, args.partition) {
        (Some(_), None) => consumer.subscribe(vec![args.topic.clone()]).await?,
        (_, Some(p)) => consumer.assign(vec![(args.topic.clone(), p)]).await?,
        (None, None) => {
            let count = client.partition_count(&args.topic).await?;
            if count == 0 {
                bail!("unknown topic {:?}", args.topic);
            }
            consumer.assign((0..count).map(|p| (args.topic.clone(), p)).collect()).await?;
        }
    }
    if let (Some(offset), Some(p)) = (args.offset, args.partition) {
        consumer.seek(&args.topic, p, Offset(offset))?;
    }
    let mut seeked_to_time = false;
    let mut consumed = 0u64;
    let mut last_record = Instant::now();
    loop {
        if let Some(ts) = from_time
            && !seeked_to_time
            && !consumer.assignment().is_empty()
        {
            consumer.seek_to_time(ts).await?;
            seeked_to_time = true;
        }
        let records = consumer.poll(Duration::from_millis(200)).await?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for (i, record) in records.iter().enumerate() {
            print(record, format);
            consumed += 1;
            if args.max_messages.is_some_and(|max| consumed >= max) {
                // Commit exactly what was printed: rewind every partition to its first record
                // that was polled but not printed.
                consumer.seek(&record.topic, record.partition, record.offset.plus(1))?;
                let mut rewound = std::collections::BTreeSet::new();
                for unprinted in &records[i + 1..] {
                    if rewound.insert((unprinted.topic.clone(), unprinted.partition)) {
                        consumer.seek(&unprinted.topic, unprinted.partition, unprinted.offset)?;
                    }
                }
                consumer.close().await?;
                return Ok(());
            }
        }
        if idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
            break;
        }
    }
    consumer.close().await?;
    Ok(())
}
