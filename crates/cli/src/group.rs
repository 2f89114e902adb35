//! `strata group …`: list, describe (lag), delete, reset-offsets.

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;
use strata_client::{Admin, Client, ResetSpec, ResetTarget};

use crate::output::{Format, Table, note};
use crate::parse;

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Committed offset, log end and lag per partition, and the members.
    Describe { group: String },
    /// Delete a group's committed offsets (the group must have no live members).
    Delete { group: String },
    /// Move a group's committed offsets; a dry run unless --execute.
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["topic", "all_topics", "from_file"])))]
#[command(group(ArgGroup::new("target").required(true).args([
    "to_earliest", "to_latest", "to_current", "to_offset", "shift_by", "to_datetime", "by_duration", "from_file"
])))]
pub struct ResetArgs {
    group: String,
    /// TOPIC or TOPIC:P,P,…; repeatable.
    #[arg(long)]
    topic: Vec<String>,
    /// Every topic the group has offsets for or subscribes to.
    #[arg(long)]
    all_topics: bool,
    #[arg(long)]
    to_earliest: bool,
    #[arg(long)]
    to_latest: bool,
    #[arg(long)]
    to_current: bool,
    #[arg(long)]
    to_offset: Option<u64>,
    #[arg(long, allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// RFC 3339, YYYY-MM-DDTHH:mm:SS[.sss] (UTC), or ms since the epoch.
    #[arg(long)]
    to_datetime: Option<String>,
    /// e.g. PT1H, P1D, 30m.
    #[arg(long)]
    by_duration: Option<String>,
    /// CSV of topic,partition,offset.
    #[arg(long)]
    from_file: Option<std::path::PathBuf>,
    /// Apply the plan (without it, only print it).
    #[arg(long)]
    execute: bool,
}

fn target(args: &ResetArgs) -> anyhow::Result<ResetTarget> {
    Ok(if args.to_earliest {
        ResetTarget::Earliest
    } else if args.to_latest {
        ResetTarget::Latest
    } else if args.to_current {
        ResetTarget::Current
    } else if let Some(o) = args.to_offset {
        ResetTarget::ToOffset(o)
    } else if let Some(n) = args.shift_by {
        ResetTarget::ShiftBy(n)
    } else if let Some(t) = &args.to_datetime {
        ResetTarget::ToDatetime(parse::datetime(t)?)
    } else if let Some(d) = &args.by_duration {
        ResetTarget::ByDuration(parse::duration(d)?)
    } else if let Some(path) = &args.from_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        ResetTarget::FromList(parse::offsets_csv(&text)?)
    } else {
        unreachable!("clap requires one target")
    })
}

pub async fn run(command: &GroupCommand, client: &Client, format: Format) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    match command {
        GroupCommand::List => {
            let mut table = Table::new(&["GROUP", "STATE", "MEMBERS"]);
            for g in admin.list_groups().await? {
                table.row(
                    vec![g.group_id.clone(), g.state.clone(), g.members.to_string()],
                    json!({"group": g.group_id, "state": g.state, "members": g.members}),
                );
            }
            table.print(format);
        }
        GroupCommand::Describe { group } => {
            let d = admin.describe_group(group).await?;
            let mut table = Table::new(&[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "OLDEST-AGE",
                "MEMBER",
            ]);
            for p in &d.partitions {
                table.row(
                    vec![
                        d.group_id.clone(),
                        p.topic.clone(),
                        p.partition.to_string(),
                        p.committed_offset.map_or("-".into(), |o| o.to_string()),
                        p.log_end_offset.to_string(),
                        p.lag.to_string(),
                        age(p.oldest_unconsumed_age_ms),
                        if p.owner.is_empty() { "-".into() } else { p.owner.clone() },
                    ],
                    json!({
                        "group": d.group_id,
                        "topic": p.topic,
                        "partition": p.partition,
                        "committed_offset": p.committed_offset,
                        "log_end_offset": p.log_end_offset,
                        "lag": p.lag,
                        "oldest_unconsumed_age_ms": p.oldest_unconsumed_age_ms,
                        "member": if p.owner.is_empty() { None } else { Some(&p.owner) },
                    }),
                );
            }
            if format == Format::Human {
                note(&format!(
                    "group {} is {} (epoch {}, assignor {}, {} members)",
                    d.group_id,
                    d.state,
                    d.group_epoch,
                    d.assignor,
                    d.members.len()
                ));
            }
            table.print(format);
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(group).await?;
            note(&format!("deleted group {group}"));
        }
        GroupCommand::ResetOffsets(args) => {
            let topics = args
                .topic
                .iter()
                .map(|t| parse::topic_partitions(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let spec = ResetSpec {
                group: args.group.clone(),
                topics,
                all_topics: args.all_topics,
                target: target(args)?,
                execute: args.execute,
            };
            let result = admin.reset_offsets(spec).await?;
            let mut table =
                Table::new(&["GROUP", "TOPIC", "PARTITION", "PREVIOUS-OFFSET", "NEW-OFFSET"]);
            for c in &result.changes {
                table.row(
                    vec![
                        args.group.clone(),
                        c.topic.clone(),
                        c.partition.to_string(),
                        c.previous_offset.map_or("-".into(), |o| o.to_string()),
                        c.new_offset.to_string(),
                    ],
                    json!({
                        "group": args.group,
                        "topic": c.topic,
                        "partition": c.partition,
                        "previous_offset": c.previous_offset,
                        "new_offset": c.new_offset,
                        "executed": result.executed,
                    }),
                );
            }
            table.print(format);
            if !result.executed && format == Format::Human {
                note("dry run: nothing changed; add --execute to apply");
            }
        }
    }
    Ok(())
}

/// How long a record has waited, for people: `-` when caught up, else `42s`, `3m12s`, `2h5m`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms == 0 => "-".into(),
        0..60 => format!("{}s", s.max(1)),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}
