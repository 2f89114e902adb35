//! Model-based property tests: the log against a plain `Vec` of batches, across random
//! appends, reads, time lookups, truncations, prefix deletions, flushes, clean reopens and
//! crashes that cut or flip bits in the bytes that were not yet fsynced.

mod common;

use std::fs;
use std::path::Path;

use common::{at_offset, with_durability};
use proptest::prelude::*;
use proptest::sample::Index;
use strata_record::{BatchBuilder, BatchHeader, Offset, RecordBatch, Timestamp};
use strata_storage::{Log, StorageError};

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Cut the active segment somewhere past its fsynced bytes.
    Cut(Index),
    /// Flip one bit somewhere past the fsynced bytes.
    Flip(Index, u8),
}

#[derive(Debug, Clone)]
enum Op {
    Append { records: Vec<(i64, usize)> },
    Read { at: Index, max_bytes: usize },
    TimeLookup { ts: i64 },
    Truncate { at: Index },
    DeleteBefore { at: Index, past_end: bool },
    Flush,
    SaveTailMark,
    Reopen,
    Crash(Damage),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => prop::collection::vec((0i64..1000, prop_oneof![4 => 0usize..400, 1 => 1000usize..1500]), 1..5)
            .prop_map(|records| Op::Append { records }),
        3 => (any::<Index>(), 1usize..8000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => (-10i64..1100).prop_map(|ts| Op::TimeLookup { ts }),
        1 => any::<Index>().prop_map(|at| Op::Truncate { at }),
        1 => (any::<Index>(), prop::bool::weighted(0.1)).prop_map(|(at, past_end)| Op::DeleteBefore { at, past_end }),
        2 => Just(Op::Flush),
        2 => Just(Op::SaveTailMark),
        1 => Just(Op::Reopen),
        2 => prop_oneof![
            Just(Damage::None),
            any::<Index>().prop_map(Damage::Cut),
            (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Damage::Flip(i, bit)),
        ].prop_map(Op::Crash),
    ]
}

/// What the log must hold: its batches as stored (with their assigned offsets).
#[derive(Debug, Default)]
struct Model {
    batches: Vec<Vec<u8>>,
    start: u64,
    end: u64,
}

fn header(batch: &[u8]) -> BatchHeader {
    BatchHeader::parse(batch).unwrap()
}

impl Model {
    /// Index of the batch holding `offset`.
    fn batch_holding(&self, offset: u64) -> Option<usize> {
        self.batches.iter().position(|b| header(b).last_offset().0 >= offset)
    }

    fn expected_read(&self, from: u64, max_bytes: usize) -> Vec<Vec<u8>> {
        let Some(first) = self.batch_holding(from) else {
            return Vec::new();
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut budget = max_bytes;
        for b in &self.batches[first..] {
            if !out.is_empty() && b.len() > budget {
                break;
            }
            budget = budget.saturating_sub(b.len());
            out.push(b.clone());
        }
        out
    }

    fn expected_time_lookup(&self, ts: i64) -> Option<Offset> {
        for b in &self.batches {
            for record in RecordBatch::new(b).unwrap().records().unwrap() {
                let record = record.unwrap();
                if record.offset().0 >= self.start && record.timestamp().0 >= ts {
                    return Some(record.offset());
                }
            }
        }
        None
    }
}

/// Small segments, fsynced only when asked (flush, tail mark, roll): a log that never fsyncs
/// gets no tail marks.
fn marked_config() -> strata_storage::LogConfig {
    with_durability(strata_storage::Durability::Interval(std::time::Duration::from_secs(3600)))
}

fn build(records: &[(i64, usize)]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (i, &(ts, len)) in records.iter().enumerate() {
        let value = vec![(ts as u8).wrapping_add(i as u8); len];
        builder.push(
            Timestamp(ts),
            Some(&ts.to_be_bytes()),
            Some(&value),
            &[("i", Some(&[i as u8]))],
        );
    }
    builder.build(Offset(0)).to_vec()
}

fn check(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.end_offset(), Offset(model.end));
    prop_assert_eq!(log.start_offset(), Offset(model.start));
    let got: Vec<Vec<u8>> =
        log.read(Offset(model.start), usize::MAX).unwrap().iter().map(|b| b.to_vec()).collect();
    let want = model.expected_read(model.start, usize::MAX);
    prop_assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        prop_assert!(
            g == w,
            "batch {} differs: got base {:?}, want base {:?}",
            i,
            header(g).base_offset(),
            header(w).base_offset()
        );
    }
    Ok(())
}

/// Simulates a crash: the log is dropped without `close`, then bytes of the active segment that
/// were not yet fsynced are damaged. Returns the number of its batches that must survive.
fn crash(dir: &Path, log: Log, model: &mut Model, damage: &Damage) {
    let durable = log.durable_end_offset().0;
    let active_base = log.segment_bases().last().unwrap().0;
    drop(log);
    let path = dir.join(format!("{active_base:020}.log"));
    let file_len = fs::metadata(&path).unwrap().len();
    let first_active = model
        .batches
        .iter()
        .position(|b| header(b).base_offset().0 >= active_base)
        .unwrap_or(model.batches.len());
    // File positions of the active segment's batches.
    let mut spans = Vec::new();
    let mut pos = 0u64;
    for b in &model.batches[first_active..] {
        spans.push((pos, pos + b.len() as u64, header(b).last_offset().0));
        pos += b.len() as u64;
    }
    assert_eq!(pos, file_len, "model and file agree on the active segment");
    let durable_pos = spans.iter().filter(|s| s.2 < durable).map(|s| s.1).max().unwrap_or(0);
    let survivors = match damage {
        Damage::None => spans.len(),
        Damage::Cut(at) => {
            let cut = durable_pos + at.index((file_len - durable_pos + 1) as usize) as u64;
            fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
            spans.iter().filter(|s| s.1 <= cut).count()
        }
        Damage::Flip(at, bit) => {
            if file_len == durable_pos {
                spans.len()
            } else {
                let p = durable_pos + at.index((file_len - durable_pos) as usize) as u64;
                let victim = spans.iter().position(|s| s.0 <= p && p < s.1).unwrap();
                // The leader epoch (bytes 12..16) is outside the CRC, as in Kafka: not flipped.
                if (12..16).contains(&(p - spans[victim].0)) {
                    spans.len()
                } else {
                    let mut bytes = fs::read(&path).unwrap();
                    bytes[p as usize] ^= 1 << bit;
                    fs::write(&path, bytes).unwrap();
                    victim
                }
            }
        }
    };
    model.batches.truncate(first_active + survivors);
    model.end = model.batches.last().map_or(active_base, |b| header(b).last_offset().0 + 1);
    model.start = model.start.min(model.end);
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Some(Log::open(dir.path(), marked_config()).unwrap());
    let mut model = Model::default();
    for op in ops {
        let l = log.as_ref().unwrap();
        match op {
            Op::Append { records } => {
                let batch = build(&records);
                let info = l.append(&batch).unwrap();
                prop_assert_eq!(info.base_offset, Offset(model.end));
                model.batches.push(at_offset(&batch, info.base_offset));
                model.end = info.last_offset.0 + 1;
            }
            Op::Read { at, max_bytes } => {
                let from = model.start + at.index((model.end - model.start + 1) as usize) as u64;
                let got: Vec<Vec<u8>> =
                    l.read(Offset(from), max_bytes).unwrap().iter().map(|b| b.to_vec()).collect();
                prop_assert_eq!(got, model.expected_read(from, max_bytes));
            }
            Op::TimeLookup { ts } => {
                prop_assert_eq!(
                    l.offset_for_time(Timestamp(ts)).unwrap(),
                    model.expected_time_lookup(ts)
                );
            }
            Op::Truncate { at } => {
                let first = model.batch_holding(model.start).unwrap_or(model.batches.len());
                let candidates: Vec<usize> = (first..model.batches.len())
                    .filter(|&i| header(&model.batches[i]).base_offset().0 >= model.start)
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                let i = candidates[at.index(candidates.len())];
                let offset = header(&model.batches[i]).base_offset();
                l.truncate_from(offset).unwrap();
                model.batches.truncate(i);
                model.end = offset.0;
            }
            Op::DeleteBefore { at, past_end } => {
                let offset = if past_end {
                    model.end + 1 + at.index(100) as u64
                } else {
                    model.start + at.index((model.end - model.start + 1) as usize) as u64
                };
                l.delete_before(Offset(offset)).unwrap();
                if offset > model.end {
                    model.batches.clear();
                    model.end = offset;
                }
                model.start = model.start.max(offset);
            }
            Op::Flush => {
                l.flush().unwrap();
                prop_assert_eq!(l.durable_end_offset(), Offset(model.end));
            }
            Op::SaveTailMark => {
                l.save_tail_mark(1).unwrap();
            }
            Op::Reopen => {
                log.take().unwrap().close().unwrap();
                log = Some(Log::open(dir.path(), marked_config()).unwrap());
            }
            Op::Crash(damage) => {
                crash(dir.path(), log.take().unwrap(), &mut model, &damage);
                log = Some(Log::open(dir.path(), marked_config()).unwrap());
            }
        }
        check(log.as_ref().unwrap(), &model)?;
    }
    Ok(())
}

/// 64 cases by default; `PROPTEST_CASES=5000` for a long soak.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }

    /// A flipped bit anywhere in any segment file, after a clean or an unclean stop: every
    /// batch before the damaged one is served unchanged, and the damaged one and anything
    /// after it never is.
    #[test]
    fn corruption_anywhere_is_never_served(
        batches in prop::collection::vec(prop::collection::vec((0i64..1000, 0usize..600), 1..4), 5..40),
        at: Index,
        bit in 0u8..8,
        clean: bool,
        mark: bool,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), marked_config()).unwrap();
        let mut stored = Vec::new();
        for records in &batches {
            let batch = build(records);
            let info = log.append(&batch).unwrap();
            stored.push(at_offset(&batch, info.base_offset));
        }
        // With a tail mark, a crash recovery does not scan the bytes below it either.
        if mark { log.save_tail_mark(1).unwrap(); }
        if clean { log.close().unwrap() } else { log.flush().unwrap(); drop(log) }
        // The whole log as one byte string; find the file and batch the flipped byte is in.
        let total: usize = stored.iter().map(Vec::len).sum();
        let p = at.index(total);
        let (mut victim, mut pos) = (0, 0);
        while pos + stored[victim].len() <= p { pos += stored[victim].len(); victim += 1; }
        prop_assume!(!(12..16).contains(&(p - pos)), "leader epoch is outside the CRC");
        let base = header(&stored[victim]).base_offset().0;
        let mut files: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
        files.sort();
        let file = files.iter().rev().find(|f| {
            f.file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap() <= base
        }).unwrap();
        let seg_base: u64 = file.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let seg_start: usize = stored.iter().take_while(|b| header(b).base_offset().0 < seg_base).map(Vec::len).sum();
        let mut bytes = fs::read(file).unwrap();
        bytes[p - seg_start] ^= 1 << bit;
        fs::write(file, bytes).unwrap();

        let log = Log::open(dir.path(), marked_config()).unwrap();
        let mut from = Offset(0);
        let mut served = 0;
        loop {
            if from == log.end_offset() { break; }
            match log.read(from, 1) {
                Ok(got) => {
                    prop_assert_eq!(got.len(), 1);
                    prop_assert_eq!(&got[0][..], &stored[served][..], "batch {} served changed", served);
                    served += 1;
                    from = header(&got[0]).last_offset().plus(1);
                }
                Err(StorageError::Corrupt { .. }) => break,
                Err(other) => return Err(TestCaseError::fail(format!("unexpected error {other}"))),
            }
        }
        prop_assert_eq!(served, victim, "every batch before the damaged one is served, none after");
    }
}
