//! `strata-bench storage`: appending with an fsync per batch against a raw `write` +
//! `fdatasync` loop of the same sizes on the same disk, and reading the log back (every CRC
//! checked) against `memcpy` of the same amount.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use serde_json::json;
use strata_record::{BatchBuilder, Offset, Timestamp};
use strata_storage::{Durability, Log, LogConfig};

use crate::Format;
use crate::report::{json, line, mb_per_s};

#[derive(Debug, Args)]
pub(crate) struct StorageArgs {
    /// Directory on the disk to measure; a temporary directory is made inside it.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Megabytes to append (and to read back, and to copy).
    #[arg(long, default_value_t = 256)]
    total_mb: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Record payload bytes per batch: records per batch = batch_bytes / record_bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// `every`: fsync each append (the default durability); `never`: leave it to the OS.
    #[arg(long, default_value = "every")]
    fsync: String,
    /// The append and raw loops alternate in this many rounds, so a disk whose speed drifts
    /// (cloud volumes do) affects both alike.
    #[arg(long, default_value_t = 4)]
    rounds: u64,
    /// Read-back and memcpy alternate this many times; the best of each is reported, as the
    /// CPU-bound figures on a shared machine are noisy.
    #[arg(long, default_value_t = 3)]
    read_rounds: u32,
    /// Bytes per read call.
    #[arg(long, default_value_t = 1024 * 1024)]
    read_bytes: usize,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

fn sample_batch(record_bytes: usize, batch_bytes: usize) -> Bytes {
    let records = (batch_bytes / record_bytes).max(1);
    let mut builder = BatchBuilder::with_capacity(records * (record_bytes + 16));
    let value: Vec<u8> = (0..record_bytes).map(|i| (i * 31 % 251) as u8).collect();
    let now = Timestamp::now();
    for _ in 0..records {
        builder.push(now, None, Some(&value), &[]);
    }
    builder.build(Offset(0))
}

/// `count` appends of `buf` to `file`, each followed by `fdatasync`: the most a log can do.
fn raw_fsync_loop(file: &mut File, buf: &[u8], count: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..count {
        file.write_all(buf)?;
        file.sync_data()?;
    }
    Ok(started.elapsed())
}

fn append_loop(log: &Log, batch: &[u8], count: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..count {
        log.append(batch)?;
    }
    Ok(started.elapsed())
}

/// Reads the whole log through `Log::read` (which checks every batch's CRC).
fn read_all(log: &Log, max_bytes: usize) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut from = log.start_offset();
    let end = log.end_offset();
    let mut bytes = 0u64;
    while from < end {
        let batches = log.read(from, max_bytes)?;
        let last = batches.last().context("read returned nothing before the end")?;
        let header = strata_record::BatchHeader::parse(last)?;
        from = header.last_offset().plus(1);
        bytes += batches.iter().map(|b| b.len() as u64).sum::<u64>();
        black_box(&batches);
    }
    Ok((bytes, started.elapsed()))
}

/// Copies `total` bytes in `chunk`-sized memcpys from a buffer larger than the CPU caches.
fn memcpy_loop(total: u64, chunk: usize) -> Duration {
    let source_len = 64 * 1024 * 1024;
    let source: Vec<u8> = (0..source_len).map(|i| (i % 251) as u8).collect();
    let mut dest = vec![0u8; chunk];
    let started = Instant::now();
    let mut copied = 0u64;
    let mut at = 0usize;
    while copied < total {
        if at + chunk > source_len {
            at = 0;
        }
        dest.copy_from_slice(&source[at..at + chunk]);
        black_box(&mut dest);
        at += chunk;
        copied += chunk as u64;
    }
    started.elapsed()
}

pub(crate) fn run(args: &StorageArgs) -> anyhow::Result<()> {
    let durability = match args.fsync.as_str() {
        "every" => Durability::EveryAppend,
        "never" => Durability::Never,
        other => anyhow::bail!("--fsync must be 'every' or 'never', not {other:?}"),
    };
    let workdir = tempfile::Builder::new().prefix("strata-bench-").tempdir_in(&args.dir)?;
    let batch = sample_batch(args.record_bytes, args.batch_bytes);
    let count = (args.total_mb * 1_000_000).div_ceil(batch.len() as u64);
    let total = count * batch.len() as u64;
    line(format!(
        "storage: {count} batches of {} bytes ({} records of {} bytes), {:.0} MB, fsync={}, {} rounds, dir={}",
        batch.len(),
        args.batch_bytes / args.record_bytes,
        args.record_bytes,
        total as f64 / 1e6,
        args.fsync,
        args.rounds,
        workdir.path().display()
    ));

    let config = LogConfig { durability, ..LogConfig::default() };
    let log_dir = workdir.path().join("log");
    let log = Log::open(&log_dir, config.clone())?;
    let raw_path = workdir.path().join("raw");
    let mut raw_file =
        File::create(&raw_path).with_context(|| format!("creating {}", raw_path.display()))?;
    let raw_buf = vec![0x5a_u8; batch.len()];
    let (mut raw, mut append) = (Duration::ZERO, Duration::ZERO);
    let rounds = args.rounds.clamp(1, count);
    for round in 0..rounds {
        let n = count / rounds + u64::from(round < count % rounds);
        if durability == Durability::EveryAppend {
            raw += raw_fsync_loop(&mut raw_file, &raw_buf, n)?;
        }
        append += append_loop(&log, &batch, n)?;
    }
    let started = Instant::now();
    log.flush()?;
    append += started.elapsed();
    log.close()?;
    let log = Log::open(&log_dir, config)?;
    let (mut read, mut memcpy) = (Duration::MAX, Duration::MAX);
    for _ in 0..args.read_rounds.max(1) {
        let (read_bytes, elapsed) = read_all(&log, args.read_bytes)?;
        anyhow::ensure!(read_bytes == total, "read {read_bytes} bytes, appended {total}");
        read = read.min(elapsed);
        memcpy = memcpy.min(memcpy_loop(total, args.read_bytes));
    }

    let append_mb_s = mb_per_s(total, append);
    let raw_mb_s = if raw.is_zero() { f64::NAN } else { mb_per_s(total, raw) };
    let read_mb_s = mb_per_s(total, read);
    let memcpy_mb_s = mb_per_s(total, memcpy);
    line(format!("  raw write+fdatasync: {raw_mb_s:10.1} MB/s"));
    line(format!(
        "  log append:          {append_mb_s:10.1} MB/s  ({:.2} x raw, {:.0} batches/s)",
        append_mb_s / raw_mb_s,
        count as f64 / append.as_secs_f64()
    ));
    line(format!("  memcpy:              {memcpy_mb_s:10.1} MB/s"));
    line(format!(
        "  log read (CRC'd):    {read_mb_s:10.1} MB/s  ({:.2} x memcpy)",
        read_mb_s / memcpy_mb_s
    ));
    if args.format == Format::Json {
        let finite = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
        json(&json!({
            "mode": "storage",
            "fsync": args.fsync,
            "batch_bytes": batch.len(),
            "record_bytes": args.record_bytes,
            "batches": count,
            "total_bytes": total,
            "append_mb_s": append_mb_s,
            "raw_fsync_mb_s": finite(raw_mb_s),
            "read_mb_s": read_mb_s,
            "memcpy_mb_s": memcpy_mb_s,
            "append_vs_raw": finite(append_mb_s / raw_mb_s),
            "read_vs_memcpy": read_mb_s / memcpy_mb_s,
        }));
    }
    Ok(())
}
