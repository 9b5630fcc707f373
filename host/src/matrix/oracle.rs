//! The oracle: what the target must hold after each run of a strategy, computed in memory
//! from the source generations the runs saw, with no SQL. The tests compare the real target
//! with it row by row.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{DAY, UPDATED_AT};
use crate::model::{Value, compare_values};

/// A strategy's semantics over the model table, as the matrix configures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    /// The target is the source (full_refresh, snapshot_diff hard_delete, cdc, backfill
    /// over the whole key range).
    Mirror,
    /// Rows past the stored cursor (`updated_at`) are appended; history stays.
    Append,
    /// Rows past the stored cursor are upserted by key; deletes are not seen.
    Merge,
    /// New and changed rows (by transaction id) are upserted by key; deletes are not seen.
    ChangedRows,
    /// The window `day` in `[first day, first day + days)` is replaced.
    Window { first: i32, days: i32 },
    /// Each `day` present in the source is replaced; absent days stay.
    Partitions,
    /// History: one version per distinct row of a key, exactly one current per live key.
    Scd2,
}

/// A row's key as comparable text (values are not `Ord`: floats).
pub type Key = Vec<String>;

/// The key of `row`, given the indexes of the key columns.
pub fn key_of(row: &[Value], key: &[usize]) -> Key {
    key.iter().map(|i| format!("{:?}", row[*i])).collect()
}

/// One version of a key in an SCD2 target.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub row: Vec<Value>,
    pub current: bool,
}

/// What the target holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// Rows sorted by key, then by `updated_at` (append keeps several rows per key).
    Rows(Vec<Vec<Value>>),
    /// Versions per key, oldest first.
    Versions(BTreeMap<Key, Vec<Version>>),
}

/// The model of one pipeline's target across runs.
#[derive(Debug, Clone)]
pub struct Oracle {
    semantics: Semantics,
    key: Vec<usize>,
    rows: BTreeMap<Key, Vec<Vec<Value>>>,
    versions: BTreeMap<Key, Vec<Version>>,
    cursor: Option<Value>,
    last_source: BTreeMap<Key, Vec<Value>>,
}

fn is_after(v: &Value, cursor: &Option<Value>) -> bool {
    cursor
        .as_ref()
        .is_none_or(|c| compare_values(v, c) == Some(std::cmp::Ordering::Greater))
}

impl Oracle {
    /// `key` holds the indexes of the key columns in the model schema.
    pub fn new(semantics: Semantics, key: Vec<usize>) -> Self {
        Oracle {
            semantics,
            key,
            rows: BTreeMap::new(),
            versions: BTreeMap::new(),
            cursor: None,
            last_source: BTreeMap::new(),
        }
    }

    fn key_of(&self, row: &[Value]) -> Key {
        key_of(row, &self.key)
    }

    /// One run of the strategy against `source` (the rows the source holds at that time).
    pub fn run(&mut self, source: &[Vec<Value>]) {
        let by_key: BTreeMap<Key, Vec<Value>> =
            source.iter().map(|r| (self.key_of(r), r.clone())).collect();
        match self.semantics {
            Semantics::Mirror => {
                self.rows = by_key
                    .iter()
                    .map(|(k, r)| (k.clone(), vec![r.clone()]))
                    .collect();
            }
            Semantics::Append | Semantics::Merge => {
                let past: Vec<&Vec<Value>> = source
                    .iter()
                    .filter(|r| is_after(&r[UPDATED_AT], &self.cursor))
                    .collect();
                for r in &past {
                    let entry = self.rows.entry(self.key_of(r)).or_default();
                    if self.semantics == Semantics::Merge {
                        entry.clear();
                    }
                    entry.push((*r).clone());
                }
                if let Some(max) = past
                    .iter()
                    .map(|r| &r[UPDATED_AT])
                    .max_by(|a, b| compare_values(a, b).unwrap_or(std::cmp::Ordering::Equal))
                {
                    self.cursor = Some(max.clone());
                }
            }
            Semantics::ChangedRows => {
                for (k, r) in &by_key {
                    if self.last_source.get(k) != Some(r) {
                        self.rows.insert(k.clone(), vec![r.clone()]);
                    }
                }
            }
            Semantics::Window { first, days } => {
                let inside = |r: &Vec<Value>| matches!(r[DAY], Value::Date(d) if d >= first && d < first + days);
                for rows in self.rows.values_mut() {
                    rows.retain(|r| !inside(r));
                }
                for (k, r) in &by_key {
                    if inside(r) {
                        self.rows.entry(k.clone()).or_default().push(r.clone());
                    }
                }
                self.rows.retain(|_, rows| !rows.is_empty());
            }
            Semantics::Partitions => {
                let days: BTreeSet<String> =
                    source.iter().map(|r| format!("{:?}", r[DAY])).collect();
                for rows in self.rows.values_mut() {
                    rows.retain(|r| !days.contains(&format!("{:?}", r[DAY])));
                }
                for (k, r) in &by_key {
                    self.rows.entry(k.clone()).or_default().push(r.clone());
                }
                self.rows.retain(|_, rows| !rows.is_empty());
            }
            Semantics::Scd2 => {
                for (k, r) in &by_key {
                    let versions = self.versions.entry(k.clone()).or_default();
                    let current = versions.iter().rposition(|v| v.current);
                    if current.is_some_and(|i| versions[i].row == *r) {
                        continue;
                    }
                    if let Some(i) = current {
                        versions[i].current = false;
                    }
                    versions.push(Version {
                        row: r.clone(),
                        current: true,
                    });
                }
                for (k, versions) in &mut self.versions {
                    if !by_key.contains_key(k) {
                        for v in versions.iter_mut() {
                            v.current = false;
                        }
                    }
                }
            }
        }
        self.last_source = by_key;
    }

    /// What the target must hold now.
    pub fn expected(&self) -> Expected {
        if self.semantics == Semantics::Scd2 {
            return Expected::Versions(self.versions.clone());
        }
        let mut rows: Vec<Vec<Value>> = self.rows.values().flatten().cloned().collect();
        sort_rows(&mut rows, &self.key);
        Expected::Rows(rows)
    }
}

/// Sorts rows by `key` (column indexes), then by `updated_at`.
pub fn sort_rows(rows: &mut [Vec<Value>], key: &[usize]) {
    rows.sort_by(|a, b| {
        key.iter()
            .chain(std::iter::once(&UPDATED_AT))
            .map(|i| compare_values(&a[*i], &b[*i]).unwrap_or(std::cmp::Ordering::Equal))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// The first difference between `actual` and `expected` rows, naming the key and columns;
/// `None` when they are equal.
pub fn first_difference(
    actual: &[Vec<Value>],
    expected: &[Vec<Value>],
    columns: &[String],
    key: &[usize],
) -> Option<String> {
    let show_key = |r: &[Value]| {
        key.iter()
            .map(|i| format!("{}={}", columns[*i], crate::model::value_display(&r[*i])))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for i in 0..actual.len().max(expected.len()) {
        match (actual.get(i), expected.get(i)) {
            (Some(a), Some(e)) if a == e => continue,
            (Some(a), Some(e)) => {
                let differing: Vec<String> = a
                    .iter()
                    .zip(e)
                    .enumerate()
                    .filter(|(_, (x, y))| x != y)
                    .take(5)
                    .map(|(c, (x, y))| {
                        format!(
                            "{}: target {} != expected {}",
                            columns[c],
                            crate::model::value_display(x),
                            crate::model::value_display(y)
                        )
                    })
                    .collect();
                return Some(format!(
                    "row {i}: target key ({}) vs expected key ({}): {}",
                    show_key(a),
                    show_key(e),
                    differing.join("; ")
                ));
            }
            (Some(a), None) => {
                return Some(format!(
                    "row {i}: extra target row with key ({})",
                    show_key(a)
                ));
            }
            (None, Some(e)) => {
                return Some(format!("row {i}: missing row with key ({})", show_key(e)));
            }
            (None, None) => unreachable!("i < max of both lengths"),
        }
    }
    if actual.len() != expected.len() {
        return Some(format!(
            "{} target rows, {} expected",
            actual.len(),
            expected.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::model::{ID, ModelConfig, generation};

    fn cfg() -> ModelConfig {
        ModelConfig {
            seed: 3,
            rows: 500,
            compound_key: false,
            domain: super::super::model::Domain::Full,
        }
    }

    #[test]
    fn mirror_merge_append_and_scd2_follow_their_semantics() {
        let (g0, g1) = (generation(&cfg(), 0), generation(&cfg(), 1));
        let rows = |o: &Oracle| match o.expected() {
            Expected::Rows(r) => r,
            Expected::Versions(_) => unreachable!(),
        };
        let mut mirror = Oracle::new(Semantics::Mirror, vec![ID]);
        mirror.run(&g0);
        mirror.run(&g1);
        assert_eq!(rows(&mirror), g1);

        let mut merge = Oracle::new(Semantics::Merge, vec![ID]);
        merge.run(&g0);
        merge.run(&g1);
        let merged = rows(&merge);
        // Deleted keys stay, everything in g1 is there as g1 has it.
        assert_eq!(
            merged.len(),
            g0.len() + g1.len()
                - g0.iter()
                    .filter(|r| g1.iter().any(|n| n[ID] == r[ID]))
                    .count()
        );
        assert!(g1.iter().all(|r| merged.contains(r)));

        let mut append = Oracle::new(Semantics::Append, vec![ID]);
        append.run(&g0);
        append.run(&g1);
        append.run(&g1);
        let changed_or_new = g1.iter().filter(|r| !g0.contains(r)).count();
        assert_eq!(rows(&append).len(), g0.len() + changed_or_new);

        let mut scd2 = Oracle::new(Semantics::Scd2, vec![ID]);
        scd2.run(&g0);
        scd2.run(&g1);
        scd2.run(&g1);
        let Expected::Versions(v) = scd2.expected() else {
            unreachable!()
        };
        let current = v.values().filter(|vs| vs.iter().any(|x| x.current)).count();
        assert_eq!(current, g1.len());
        assert!(
            v.values()
                .all(|vs| vs.iter().filter(|x| x.current).count() <= 1)
        );
    }

    #[test]
    fn differences_name_the_key_and_columns() {
        let g0 = generation(&cfg(), 0);
        let mut changed = g0.clone();
        changed[3][5] = Value::Text("other".into());
        let columns: Vec<String> = crate::matrix::model::schema(&cfg()).names();
        let d = first_difference(&changed, &g0, &columns, &[ID]).unwrap();
        assert!(d.contains("id=4") && d.contains("label"), "{d}");
        assert_eq!(first_difference(&g0, &g0, &columns, &[ID]), None);
    }
}
