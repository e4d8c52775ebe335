//! Synthetic CDC data generator, argument-compatible with the seed's
//! `synthetic-cdc-data-generator.py`: UUID keys, random float non-keys, headerless CSV.
//!
//! Day 1 holds `init_rows` rows. Day 2 drops the first `floor(init_rows * pct_del)` of them
//! (deletes), gives the next `floor(init_rows * pct_upd)` new non-key values (updates), keeps
//! the rest (unchanged), and appends new keys until it holds `incr_rows` rows (inserts).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{Error, Result};

/// Generator arguments (the seed's positional arguments plus a seed).
#[derive(Debug, Clone)]
pub struct GenerateSpec {
    /// Rows of day 1.
    pub init_rows: u64,
    /// Rows of day 2: the day-1 rows kept (updated or unchanged) plus inserts.
    pub incr_rows: u64,
    /// Key columns.
    pub keys: usize,
    /// Non-key columns.
    pub nonkeys: usize,
    /// Share of day-1 rows deleted on day 2. The three shares are in the `[0.0, 1.0]`
    /// interval and sum to 1.0.
    pub pct_del: f64,
    /// Share of day-1 rows updated on day 2.
    pub pct_upd: f64,
    /// Share of day-1 rows unchanged on day 2.
    pub pct_unchanged: f64,
    /// Folder of day 1's extract (`part-00000.csv`).
    pub initial_output: PathBuf,
    /// Folder of day 2's extract (`part-00000.csv`).
    pub incremental_output: PathBuf,
    /// Random seed; the same seed gives byte-identical files.
    pub seed: Option<u64>,
}

/// What was generated.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GenerateSummary {
    /// Rows written on day 1.
    pub initial_rows: u64,
    /// Day-1 rows left out of day 2.
    pub deleted: u64,
    /// Day-1 rows changed on day 2.
    pub updated: u64,
    /// Day-1 rows copied unchanged to day 2.
    pub unchanged: u64,
    /// New rows of day 2.
    pub inserted: u64,
    /// The day-1 file written.
    pub initial_file: PathBuf,
    /// The day-2 file written.
    pub incremental_file: PathBuf,
}

impl GenerateSpec {
    /// The seed article's example: 10,000 records, 5 keys, 10 non-keys, 20% deleted, 40%
    /// updated, 40% unchanged, 10,000 records on day 2.
    pub fn seed_example(initial_output: PathBuf, incremental_output: PathBuf, seed: u64) -> Self {
        GenerateSpec {
            init_rows: 10_000,
            incr_rows: 10_000,
            keys: 5,
            nonkeys: 10,
            pct_del: 0.2,
            pct_upd: 0.4,
            pct_unchanged: 0.4,
            initial_output,
            incremental_output,
            seed: Some(seed),
        }
    }

    /// Checks the arguments and returns the (deleted, updated, unchanged, inserted) counts.
    ///
    /// # Errors
    /// [`Error::Usage`] when a share is outside [0, 1], the shares do not sum to 1.0, or the
    /// incremental count is too small to hold the kept rows (a negative insert count).
    pub fn plan(&self) -> Result<(u64, u64, u64, u64)> {
        for (name, v) in [
            ("PCT_DEL", self.pct_del),
            ("PCT_UPD", self.pct_upd),
            ("PCT_UNCHANGED", self.pct_unchanged),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::Usage(format!(
                    "{name} must be between 0.0 and 1.0, got {v}"
                )));
            }
        }
        let sum = self.pct_del + self.pct_upd + self.pct_unchanged;
        if (sum - 1.0).abs() > 1e-9 {
            return Err(Error::Usage(format!(
                "PCT_DEL + PCT_UPD + PCT_UNCHANGED must equal 1.0, got {sum}"
            )));
        }
        if self.keys == 0 {
            return Err(Error::Usage("NO_KEYS must be at least 1".into()));
        }
        let deleted = (self.init_rows as f64 * self.pct_del) as u64;
        let updated = ((self.init_rows as f64 * self.pct_upd) as u64).min(self.init_rows - deleted);
        let unchanged = self.init_rows - deleted - updated;
        let kept = updated + unchanged;
        if self.incr_rows < kept {
            return Err(Error::Usage(format!(
                "NO_INCR_RECS ({}) is below the {kept} rows kept from day 1: the insert count would be negative",
                self.incr_rows
            )));
        }
        Ok((deleted, updated, unchanged, self.incr_rows - kept))
    }
}

struct RowWriter {
    out: BufWriter<File>,
    nonkeys: usize,
}

impl RowWriter {
    fn create(dir: &Path, nonkeys: usize) -> Result<(Self, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("part-00000.csv");
        let out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        Ok((RowWriter { out, nonkeys }, path))
    }

    fn write(&mut self, keys: &[uuid::Uuid], values: &[f64]) -> Result<()> {
        let mut buf = uuid::Uuid::encode_buffer();
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            self.out
                .write_all(k.hyphenated().encode_lower(&mut buf).as_bytes())?;
        }
        for v in &values[..self.nonkeys] {
            write!(self.out, ",{v}")?;
        }
        self.out.write_all(b"\n")?;
        Ok(())
    }
}

fn random_keys(rng: &mut SmallRng, n: usize) -> Vec<uuid::Uuid> {
    (0..n)
        .map(|_| uuid::Builder::from_random_bytes(rng.gen()).into_uuid())
        .collect()
}

fn random_values(rng: &mut SmallRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.gen::<f64>()).collect()
}

/// Generates day 1 and day 2 into `INITIAL_OUTPUT/part-00000.csv` and
/// `INCREMENTAL_OUTPUT/part-00000.csv`.
///
/// # Errors
/// [`Error::Usage`] for inconsistent arguments (see [`GenerateSpec::plan`]); I/O errors.
pub fn generate(spec: &GenerateSpec) -> Result<GenerateSummary> {
    let (deleted, updated, unchanged, inserted) = spec.plan()?;
    let seed = spec.seed.unwrap_or_else(rand::random);
    // Day 1 and day 2 are written in one pass: row i of day 1 is regenerated from a per-row
    // stream, so memory stays flat at any size.
    let (mut day1, initial_file) = RowWriter::create(&spec.initial_output, spec.nonkeys)?;
    let (mut day2, incremental_file) = RowWriter::create(&spec.incremental_output, spec.nonkeys)?;
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in 0..spec.init_rows {
        let keys = random_keys(&mut rng, spec.keys);
        let values = random_values(&mut rng, spec.nonkeys);
        day1.write(&keys, &values)?;
        if i < deleted {
            continue;
        }
        if i < deleted + updated {
            day2.write(&keys, &random_values(&mut rng, spec.nonkeys))?;
        } else {
            day2.write(&keys, &values)?;
        }
    }
    for _ in 0..inserted {
        let keys = random_keys(&mut rng, spec.keys);
        let values = random_values(&mut rng, spec.nonkeys);
        day2.write(&keys, &values)?;
    }
    day1.out.flush()?;
    day2.out.flush()?;
    Ok(GenerateSummary {
        initial_rows: spec.init_rows,
        deleted,
        updated,
        unchanged,
        inserted,
        initial_file,
        incremental_file,
    })
}

/// A table config for generated data: `keycol1..N` string keys and `nonkeycol1..M` float
/// non-keys, with tables under `lake/` next to the config file.
pub fn config_yaml(name: &str, keys: usize, nonkeys: usize) -> String {
    let mut out = format!(
        "name: {name}\ncurrent_table_path: lake/{name}_current\nhistory_table_path: lake/{name}_history\n\
         delimiter: \",\"\nextract_type: full\ncolumns:\n"
    );
    for i in 1..=keys {
        out.push_str(&format!(
            "- name: keycol{i}\n  type: string\n  key: true\n  ignore: false\n"
        ));
    }
    for i in 1..=nonkeys {
        out.push_str(&format!(
            "- name: nonkeycol{i}\n  type: float\n  key: false\n  ignore: false\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, pct: (f64, f64, f64), incr: u64) -> GenerateSpec {
        GenerateSpec {
            init_rows: 1000,
            incr_rows: incr,
            keys: 2,
            nonkeys: 3,
            pct_del: pct.0,
            pct_upd: pct.1,
            pct_unchanged: pct.2,
            initial_output: dir.join("day1"),
            incremental_output: dir.join("day2"),
            seed: Some(7),
        }
    }

    #[test]
    fn counts_follow_the_seed_rules() {
        let dir = tempfile::tempdir().unwrap();
        let s = generate(&spec(dir.path(), (0.2, 0.4, 0.4), 1000)).unwrap();
        assert_eq!(
            (s.deleted, s.updated, s.unchanged, s.inserted),
            (200, 400, 400, 200)
        );
        let day1 = std::fs::read_to_string(&s.initial_file).unwrap();
        let day2 = std::fs::read_to_string(&s.incremental_file).unwrap();
        assert_eq!(day1.lines().count(), 1000);
        assert_eq!(day2.lines().count(), 1000);
        assert!(day1.lines().all(|l| l.split(',').count() == 5));
        let d1: std::collections::HashSet<&str> = day1.lines().collect();
        // unchanged rows are byte-identical; updated and inserted rows are not in day 1
        assert_eq!(day2.lines().filter(|l| d1.contains(l)).count(), 400);
    }

    #[test]
    fn same_seed_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = generate(&spec(a.path(), (0.2, 0.4, 0.4), 1000)).unwrap();
        let sb = generate(&spec(b.path(), (0.2, 0.4, 0.4), 1000)).unwrap();
        assert_eq!(
            std::fs::read(sa.incremental_file).unwrap(),
            std::fs::read(sb.incremental_file).unwrap()
        );
    }

    #[test]
    fn bad_shares_and_negative_inserts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(generate(&spec(dir.path(), (0.2, 0.4, 0.3), 1000))
            .unwrap_err()
            .to_string()
            .contains("1.0"));
        assert!(generate(&spec(dir.path(), (0.2, 0.4, 0.4), 700))
            .unwrap_err()
            .to_string()
            .contains("negative"));
    }
}
