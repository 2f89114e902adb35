//! Parsing what people type: durations, dates, `KEY=VALUE`, `topic:0,1,2`, offset CSV files.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use strata_record::Timestamp;

/// `5s`, `250ms`, `1h 30m`, or ISO 8601 `PT1H30M` / `P1DT2H` (Kafka's `--by-duration` form).
pub fn duration(text: &str) -> anyhow::Result<Duration> {
    let span: jiff::SignedDuration = text
        .trim()
        .parse()
        .or_else(|_| {
            text.trim()
                .parse::<jiff::Span>()
                .and_then(|s| s.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
        })
        .map_err(|e| {
            anyhow!("invalid duration {text:?} ({e}); examples: 30s, 500ms, 2h, PT1H30M, P1D")
        })?;
    Duration::try_from(span).map_err(|_| anyhow!("duration {text:?} must not be negative"))
}

/// An instant: RFC 3339 (`2026-11-27T10:00:00Z`, `…+01:00`), a date-time without zone (read
/// as UTC, e.g. Kafka's `2026-11-27T10:00:00.000`), or milliseconds since the Unix epoch.
pub fn datetime(text: &str) -> anyhow::Result<Timestamp> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Timestamp(ms));
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(Timestamp(ts.as_millisecond()));
    }
    let civil: jiff::civil::DateTime = text
        .parse()
        .map_err(|e| anyhow!("invalid date-time {text:?} ({e}); example: 2026-11-27T10:00:00Z"))?;
    let zoned = civil.to_zoned(jiff::tz::TimeZone::UTC)?;
    Ok(Timestamp(zoned.timestamp().as_millisecond()))
}

/// `KEY=VALUE` pairs into a map.
pub fn key_values(pairs: &[String]) -> anyhow::Result<HashMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            let (k, v) =
                pair.split_once('=').with_context(|| format!("{pair:?} is not KEY=VALUE"))?;
            Ok((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// `topic` or `topic:0,2,5`.
pub fn topic_partitions(text: &str) -> anyhow::Result<(String, Vec<u32>)> {
    match text.split_once(':') {
        None => Ok((text.to_owned(), Vec::new())),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<u32>()
                        .with_context(|| format!("bad partition {p:?} in {text:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((topic.to_owned(), partitions))
        }
    }
}

/// Kafka's reset CSV: `topic,partition,offset` per line; blank lines and `#` comments skipped.
pub fn offsets_csv(text: &str) -> anyhow::Result<Vec<(String, u32, u64)>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [topic, partition, offset] = fields[..] else {
            bail!("line {}: expected topic,partition,offset, got {raw:?}", n + 1);
        };
        out.push((
            topic.to_owned(),
            partition
                .parse()
                .with_context(|| format!("line {}: bad partition {partition:?}", n + 1))?,
            offset.parse().with_context(|| format!("line {}: bad offset {offset:?}", n + 1))?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("PT1H30M").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("P1D").unwrap(), Duration::from_secs(86_400));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn datetimes() {
        assert_eq!(datetime("1700000000000").unwrap(), Timestamp(1_700_000_000_000));
        assert_eq!(datetime("1970-01-01T00:00:01Z").unwrap(), Timestamp(1000));
        assert_eq!(datetime("1970-01-01T00:00:01.500").unwrap(), Timestamp(1500));
        assert_eq!(datetime("1970-01-01T01:00:00+01:00").unwrap(), Timestamp(0));
    }

    #[test]
    fn specs_and_csv() {
        assert_eq!(topic_partitions("t:0,2").unwrap(), ("t".to_owned(), vec![0, 2]));
        assert_eq!(topic_partitions("t").unwrap(), ("t".to_owned(), vec![]));
        assert!(topic_partitions("t:x").is_err());
        let csv = offsets_csv("# export\norders,0,5\n\norders,1,7\n").unwrap();
        assert_eq!(csv, vec![("orders".into(), 0, 5), ("orders".into(), 1, 7)]);
        assert!(offsets_csv("orders,0").is_err());
    }
}
