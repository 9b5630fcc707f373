//! Partitions on ClickHouse: native replacement in a sink, split reads of a source.
//!
//! Native partition replacement: `ALTER TABLE target REPLACE PARTITION ID '<id>' FROM
//! <copy>` for each partition the staged rows fall into, where the copy is a table created
//! `AS` the target (same engine, sorting and partition key) loaded from staging. Used only
//! when the target is partitioned by exactly the column asked for, so each partition holds
//! one value and replacing it removes nothing that is not staged; otherwise
//! [`partition_key_is`] says no and the strategy falls back to delete + insert. Each
//! `REPLACE PARTITION` is atomic for its partition; the sink runs them at commit, after
//! which a crash leaves some partitions replaced: the re-run replaces them again with the
//! same rows, which converges.
//!
//! Split reads ([`split`]): ClickHouse has no snapshot that several queries can share, so
//! each share pins its rows itself. A part's name says which insert blocks it holds
//! (`<partition>_<min block>_<max block>_<level>`): blocks are numbered per table in commit
//! order, and a merge only joins the blocks of its parts. The split notes each partition's
//! highest block (its horizon) and each share reads only parts within its partitions'
//! horizons, so it sees the rows of the split's moment, whatever merged since, and none
//! inserted after. Two things it cannot see past: a merge of a part from before the split
//! with one from after (the part then holds both, and is left out), and a mutation or a
//! dropped partition. The share's check finds both after its read, and the load fails
//! rather than publish a read that is not the table at one moment.

use super::dialect::{NAMES, text_literal};
use super::publish::{database_is, text};
use crate::connectors::dialect::SqlDialect;
use crate::connectors::{Share, ShareCheck, SnapshotSplit, SqlSession, Statement, TableName};
use crate::error::Result;
use crate::manifest::Parallelism;
use crate::model::{DataType, Value};

/// Whether `target`'s partition key is exactly `column`.
pub async fn partition_key_is(
    s: &mut dyn SqlSession,
    target: &TableName,
    column: &str,
) -> Result<bool> {
    let sql = format!(
        "SELECT partition_key FROM system.tables WHERE {} AND name = {}",
        database_is(target),
        text_literal(&target.name)
    );
    let rows = s.query(&Statement::new(sql), &[DataType::Text]).await?;
    Ok(match rows.first().and_then(|r| r.first()) {
        Some(Value::Text(key)) => {
            let key = key.trim();
            let unquoted = key
                .strip_prefix('`')
                .and_then(|k| k.strip_suffix('`'))
                .unwrap_or(key);
            unquoted == column
        }
        _ => false,
    })
}

/// The ids of the partitions `table` has rows in.
pub async fn partition_ids(s: &mut dyn SqlSession, table: &TableName) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT partition_id FROM system.parts WHERE {} AND table = {} AND active ORDER BY partition_id",
        database_is(table),
        text_literal(&table.name)
    );
    let rows = s.query(&Statement::new(sql), &[DataType::Text]).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(Value::Text(id)) => Some(id),
            _ => None,
        })
        .collect())
}

/// Replaces partition `id` of `target` with the same partition of `copy`.
pub fn replace_sql(target: &TableName, copy: &TableName, id: &str) -> String {
    format!(
        "ALTER TABLE {} REPLACE PARTITION ID {} FROM {}",
        NAMES.table_ref(target),
        text_literal(id),
        NAMES.table_ref(copy)
    )
}

/// One partition of a split read, as the split found it.
#[derive(Debug, Clone, PartialEq)]
struct Partition {
    id: String,
    rows: i64,
    /// Uncompressed bytes: what reading it costs.
    bytes: i64,
    /// Its highest insert block: parts within it were there at the split.
    horizon: i64,
}

/// Splits a read of `table` by partition into `streams` shares of about equal size
/// (uncompressed), each reading its partitions' parts within their horizons, with the check
/// that the read was the split's rows (module docs). `None` (one stream) for `auto`: a
/// table that takes inserts while it is read often merges a part from before the split with
/// one from after, which fails a split read, so only a number splits. Also `None` unless
/// the table is a plain `MergeTree` (the replacing and collapsing engines drop rows as they
/// merge; a replicated table numbers blocks before it commits them) with at least two
/// partitions, no unfinished mutation, and every part named `<partition>_<min>_<max>_...`
/// (tables of the old date-partitioned syntax name parts otherwise).
pub async fn split(
    s: &mut dyn SqlSession,
    table: &TableName,
    streams: Parallelism,
) -> Result<Option<SnapshotSplit>> {
    let Parallelism::Streams(wanted) = streams else {
        return Ok(None);
    };
    let of_table = format!(
        "{} AND table = {}",
        database_is(table),
        text_literal(&table.name)
    );
    let engine = text(
        s,
        format!(
            "SELECT engine FROM system.tables WHERE {} AND name = {}",
            database_is(table),
            text_literal(&table.name)
        ),
    )
    .await?;
    if wanted < 2 || engine.as_deref() != Some("MergeTree") {
        return Ok(None);
    }
    // The moment of the split comes first: a mutation created from it on fails the check.
    let sql = format!(
        "SELECT toString(now()), toInt64(count()) FROM system.mutations WHERE {of_table} AND is_done = 0"
    );
    let rows = s
        .query(&Statement::new(sql), &[DataType::Text, DataType::Int64])
        .await?;
    let (since, unfinished) = match rows.first().map(Vec::as_slice) {
        Some([Value::Text(now), Value::Int(n)]) => (now.clone(), *n),
        _ => return Ok(None),
    };
    let sql = format!(
        "SELECT partition_id, toInt64(sum(rows)), toInt64(sum(data_uncompressed_bytes)), \
                toInt64(max(max_block_number)), \
                toInt64(min(substring(name, 1, length(partition_id) + 1) = concat(partition_id, '_') \
                            AND position(partition_id, '_') = 0)) \
         FROM system.parts WHERE {of_table} AND active GROUP BY partition_id ORDER BY partition_id"
    );
    let types = [
        DataType::Text,
        DataType::Int64,
        DataType::Int64,
        DataType::Int64,
        DataType::Int64,
    ];
    let mut partitions = Vec::new();
    for row in s.query(&Statement::new(sql), &types).await? {
        match row.as_slice() {
            [
                Value::Text(id),
                Value::Int(rows),
                Value::Int(bytes),
                Value::Int(horizon),
                Value::Int(1),
            ] => partitions.push(Partition {
                id: id.clone(),
                rows: *rows,
                bytes: *bytes,
                horizon: *horizon,
            }),
            _ => return Ok(None),
        }
    }
    let groups = group(partitions, wanted as usize);
    if unfinished > 0 || groups.len() < 2 {
        return Ok(None);
    }
    let failure = format!(
        "ClickHouse: {table} changed while it was read in {} streams: a merge joined rows inserted before the read began with rows inserted after, or a mutation or partition operation ran. Nothing was published; run again, or read the table in one stream (`transfer.parallelism: 1`)",
        groups.len()
    );
    let shares = groups
        .iter()
        .map(|partitions| Share {
            predicate: share_predicate(partitions),
            check: Some(ShareCheck {
                query: Statement::new(share_check(&of_table, &since, partitions)),
                failure: failure.clone(),
            }),
        })
        .collect();
    Ok(Some(SnapshotSplit {
        snapshot: None,
        shares,
    }))
}

/// `partitions` dealt into at most `n` groups of about equal bytes, largest first to the
/// lightest group; no group is empty.
fn group(mut partitions: Vec<Partition>, n: usize) -> Vec<Vec<Partition>> {
    partitions.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.id.cmp(&b.id)));
    let mut groups: Vec<(i64, Vec<Partition>)> = vec![(0, Vec::new()); n.min(partitions.len())];
    for p in partitions {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        lightest.0 += p.bytes;
        lightest.1.push(p);
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// `transform(<partition expr>, [ids], [horizons], 0)`: each partition's horizon, 0 (below
/// every block) for any other.
fn horizon_of(partition: &str, partitions: &[Partition]) -> String {
    let ids: Vec<String> = partitions.iter().map(|p| text_literal(&p.id)).collect();
    let horizons: Vec<String> = partitions.iter().map(|p| p.horizon.to_string()).collect();
    format!(
        "transform({partition}, [{}], [{}], 0)",
        ids.join(", "),
        horizons.join(", ")
    )
}

/// The rows of parts of `partitions` within their horizons, from the part's name (the
/// `_part` virtual column, which also lets the server skip other parts unread).
fn share_predicate(partitions: &[Partition]) -> String {
    format!(
        "toInt64(splitByChar('_', _part)[3]) <= {}",
        horizon_of("splitByChar('_', _part)[1]", partitions)
    )
}

/// 1 when `partitions` still hold, within their horizons, exactly the rows they held at the
/// split, in no part reaching past a horizon, and no mutation of the table began `since`.
fn share_check(of_table: &str, since: &str, partitions: &[Partition]) -> String {
    let ids: Vec<String> = partitions.iter().map(|p| text_literal(&p.id)).collect();
    let rows: i64 = partitions.iter().map(|p| p.rows).sum();
    format!(
        "SELECT toInt64(countIf(min_block_number <= h AND max_block_number > h) = 0 \
                        AND sumIf(rows, max_block_number <= h) = {rows} \
                        AND (SELECT count() FROM system.mutations WHERE {of_table} \
                             AND create_time >= toDateTime({})) = 0) \
         FROM (SELECT min_block_number, max_block_number, rows, {} AS h \
               FROM system.parts WHERE {of_table} AND active AND partition_id IN ({}))",
        text_literal(since),
        horizon_of("partition_id", partitions),
        ids.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(id: &str, bytes: i64) -> Partition {
        Partition {
            id: id.into(),
            rows: bytes / 10,
            bytes,
            horizon: 7,
        }
    }

    #[test]
    fn partitions_are_dealt_largest_first_to_the_lightest_share() {
        let ids = |groups: Vec<Vec<Partition>>| -> Vec<Vec<String>> {
            groups
                .into_iter()
                .map(|g| g.into_iter().map(|p| p.id).collect())
                .collect()
        };
        let all = ["a", "b", "c", "d", "e"]
            .into_iter()
            .zip([40, 100, 90, 10, 50])
            .map(|(id, bytes)| partition(id, bytes))
            .collect::<Vec<_>>();
        assert_eq!(
            ids(group(all.clone(), 2)),
            [vec!["b", "a", "d"], vec!["c", "e"]]
        );
        assert_eq!(ids(group(all[..2].to_vec(), 4)), [vec!["b"], vec!["a"]]);
        assert!(group(Vec::new(), 3).is_empty());
    }

    #[test]
    fn a_share_reads_its_partitions_up_to_their_horizons_and_checks_them() {
        let share = [partition("20240101", 100), partition("2024'02", 10)];
        assert_eq!(
            share_predicate(&share),
            "toInt64(splitByChar('_', _part)[3]) <= transform(splitByChar('_', _part)[1], ['20240101', '2024\\'02'], [7, 7], 0)"
        );
        let check = share_check(
            "database = 'd' AND table = 't'",
            "2026-12-06 18:00:00",
            &share,
        );
        assert!(
            check.contains("sumIf(rows, max_block_number <= h) = 11"),
            "{check}"
        );
        assert!(
            check.contains("create_time >= toDateTime('2026-12-06 18:00:00')"),
            "{check}"
        );
        assert!(
            check.contains("partition_id IN ('20240101', '2024\\'02')"),
            "{check}"
        );
    }
}
