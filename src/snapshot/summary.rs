//! The run summary printed at the end (human text, or JSON with `--json`).

use std::fmt;

use serde::Serialize;

use crate::config::TableSpec;
use crate::core::op::OpCounts;
use crate::core::spill::SpillStats;
use crate::sink::delta::Recovery;
use crate::snapshot::plan::MemoryPlan;
use crate::source::extract::SkippedFile;

/// What a run did to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableSummary {
    /// Table URL.
    pub path: String,
    /// Delta version after the run (None: not committed to).
    pub version: Option<u64>,
    /// Rows written.
    pub rows_written: u64,
    /// Bytes of the Parquet files written.
    pub bytes_written: u64,
    /// Data files written.
    pub files_written: u64,
}

/// Seconds spent per stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    /// Reading, casting, hashing and partitioning the input. A streamed run (see `plan`)
    /// diffs each batch as it is read, its data files written as rows come out: that is here.
    pub read_secs: f64,
    /// Streaming the current table's join columns into partitions (streamed run: into the
    /// in-memory index, built before the read).
    pub scan_secs: f64,
    /// Diffing the partitions, with the data files written as rows come out, then reading
    /// back the rows of keys absent from the extract (streamed run: only the latter).
    pub diff_secs: f64,
    /// Finishing the data files after the diff, and writing rejects.
    pub write_secs: f64,
    /// Committing the tables.
    pub commit_secs: f64,
}

/// Memory use of a run.
#[derive(Debug, Clone, Serialize)]
pub struct MemorySummary {
    /// The memory plan (see `snapshot::plan`).
    pub plan: MemoryPlan,
    /// What was spilled to disk.
    pub spill: SpillStats,
    /// Peak resident set size of the process (Linux `VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// The outcome of `tributary run`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Table name.
    pub table: String,
    /// Business effective date, `YYYY-MM-DD`.
    pub business_date: String,
    /// `applied` or `no-op`.
    pub status: String,
    /// One line for people: what the run did.
    pub message: String,
    /// The run's sequence number (no-op: the run that applied the same input).
    pub run_seq: Option<i64>,
    /// The run's id (no-op: the id of the run that applied the same input; empty for runs of
    /// earlier versions).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// An interrupted earlier run that this run completed first.
    pub recovered: Option<Recovery>,
    /// Extract files read.
    pub input_files: usize,
    /// Entries of the input folder not read, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<SkippedFile>,
    /// Input fingerprint (docs/hashing.md).
    pub fingerprint: String,
    /// Rows read, rejected ones included.
    pub rows_read: u64,
    /// Rows set aside under `on_error: reject`.
    pub rows_rejected: u64,
    /// Rows per operation.
    pub counts: OpCounts,
    /// The current table.
    pub current: TableSummary,
    /// The history table.
    pub history: TableSummary,
    /// The rejects table, when rows were rejected.
    pub rejects: Option<TableSummary>,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
    /// Rows read per second of wall time.
    pub rows_per_sec: f64,
    /// Seconds per stage.
    pub stages: StageTimes,
    /// None for a no-op run.
    pub memory: Option<MemorySummary>,
}

impl RunSummary {
    /// The summary of a run of `table` for `business_date` (`YYYY-MM-DD`) over `input_files`
    /// files, before anything is known of its outcome.
    pub fn new(
        table: &TableSpec,
        business_date: &str,
        recovered: Option<Recovery>,
        input_files: usize,
    ) -> Self {
        RunSummary {
            table: table.name.clone(),
            business_date: business_date.to_string(),
            recovered,
            input_files,
            current: TableSummary {
                path: table.lake.current_url.to_string(),
                ..Default::default()
            },
            history: TableSummary {
                path: table.lake.history_url.to_string(),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

impl fmt::Display for TableSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(
                f,
                "{} rows, {} in {} files -> version {v} ({})",
                self.rows_written,
                crate::report::mib(self.bytes_written),
                self.files_written,
                self.path
            ),
            None => write!(f, "unchanged ({})", self.path),
        }
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}: {}", self.table, self.business_date, self.message)?;
        if let Some(r) = &self.recovered {
            writeln!(
                f,
                "  recovered: completed interrupted run {} ({})",
                r.completed_run, r.business_date
            )?;
        }
        for s in &self.skipped_files {
            writeln!(f, "  not read:   {} ({})", s.name, s.reason)?;
        }
        if self.status != "applied" {
            return Ok(());
        }
        let c = &self.counts;
        writeln!(
            f,
            "  rows read:  {} from {} file(s), {} rejected",
            self.rows_read, self.input_files, self.rows_rejected
        )?;
        writeln!(
            f,
            "  operations: I {}  U {}  D {}  X {}  N {}",
            c.inserted, c.updated, c.deleted, c.not_supplied, c.unchanged
        )?;
        writeln!(f, "  current:    {}", self.current)?;
        writeln!(f, "  history:    {}", self.history)?;
        if let Some(r) = &self.rejects {
            writeln!(f, "  rejects:    {r}")?;
        }
        if let Some(m) = &self.memory {
            let diff = match m.plan.streamed {
                true => "streamed (no partitions)".to_string(),
                false => format!(
                    "{} partition(s), {} diff worker(s)",
                    m.plan.partitions, m.plan.workers
                ),
            };
            writeln!(
                f,
                "  memory:     limit {}, {} thread(s), {diff}, {} spilled, peak RSS {}",
                crate::report::mib(m.plan.limit_bytes),
                m.plan.threads,
                crate::report::mib(m.spill.spilled_bytes),
                m.peak_rss_bytes.map_or("?".into(), crate::report::mib)
            )?;
        }
        let s = &self.stages;
        write!(
            f,
            "  elapsed:    {:.2} s ({:.0} rows/s; read {:.2} s, scan {:.2} s, diff {:.2} s, write {:.2} s, commit {:.2} s)",
            self.elapsed_secs,
            self.rows_per_sec,
            s.read_secs,
            s.scan_secs,
            s.diff_secs,
            s.write_secs,
            s.commit_secs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_line_says_whether_the_run_was_streamed() {
        let plan = MemoryPlan::new(1 << 30, 1 << 20, 1 << 20, 2);
        let mut summary = RunSummary {
            status: "applied".into(),
            memory: Some(MemorySummary {
                plan,
                spill: Default::default(),
                peak_rss_bytes: None,
            }),
            ..Default::default()
        };
        let text = summary.to_string();
        assert!(
            text.contains("2 thread(s), 1 partition(s), 1 diff worker(s)"),
            "{text}"
        );
        if let Some(m) = summary.memory.as_mut() {
            m.plan = plan.streamed();
        }
        let text = summary.to_string();
        assert!(text.contains("streamed (no partitions)"), "{text}");
    }
}
