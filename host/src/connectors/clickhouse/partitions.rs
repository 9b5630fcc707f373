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
//! inserted after. What it cannot see past: a merge of a part from before the split with
//! one from after (the part then holds both, and is left out), a mutation, a dropped or
//! replaced partition, an `ALTER`. The share's check finds these after its read, and the
//! load fails rather than publish a read that is not the table at one moment.

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
/// merge; a replicated table numbers blocks before it commits them) without a TTL (whose
/// merges drop rows), with at least two partitions, no unfinished
/// mutation, and every part named `<partition>_<min>_<max>_...` (tables of the old
/// date-partitioned syntax name parts otherwise); and when the shares' statements would be
/// too long for the server (`max_query_size`, 256 KiB by default).
pub async fn split(
    s: &mut dyn SqlSession,
    table: &TableName,
    streams: Parallelism,
) -> Result<Option<SnapshotSplit>> {
    let Parallelism::Streams(wanted) = streams else {
        return Ok(None);
    };
    if wanted < 2 {
        return Ok(None);
    }
    let in_tables = format!(
        "{} AND name = {}",
        database_is(table),
        text_literal(&table.name)
    );
    let of_table = format!(
        "{} AND table = {}",
        database_is(table),
        text_literal(&table.name)
    );
    // What the check compares comes first: whatever changes after it fails the check.
    let sql = format!(
        "SELECT engine, {} FROM system.tables WHERE {in_tables}",
        definition(&in_tables, &of_table)
    );
    let rows = s.query(&Statement::new(sql), &[DataType::Text; 2]).await?;
    let defined = match rows.first().map(Vec::as_slice) {
        Some([Value::Text(engine), Value::Text(defined)]) if engine == "MergeTree" => {
            defined.clone()
        }
        _ => return Ok(None),
    };
    if has_ttl(s, &in_tables).await? {
        return Ok(None);
    }
    let sql = format!(
        "SELECT arrayStringConcat(groupArray(mutation_id), ','), toInt64(countIf(is_done = 0)) \
         FROM system.mutations WHERE {of_table}"
    );
    let rows = s
        .query(&Statement::new(sql), &[DataType::Text, DataType::Int64])
        .await?;
    let mutations: Vec<String> = match rows.first().map(Vec::as_slice) {
        Some([Value::Text(ids), Value::Int(0)]) => ids
            .split(',')
            .filter(|id| !id.is_empty())
            .map(text_literal)
            .collect(),
        _ => return Ok(None),
    };
    let sql = format!(
        "SELECT partition_id, toInt64(sum(rows)), toInt64(sum(data_uncompressed_bytes)), \
                toInt64(max(max_block_number)), \
                toInt64(min(substring(name, 1, length(partition_id) + 1) = concat(partition_id, '_') \
                            AND position(partition_id, '_') = 0)) \
         FROM system.parts WHERE {of_table} AND active GROUP BY partition_id ORDER BY partition_id"
    );
    let mut types = [DataType::Int64; 5];
    types[0] = DataType::Text;
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
    if groups.len() < 2 {
        return Ok(None);
    }
    let unchanged = Unchanged {
        of_table,
        in_tables,
        defined,
        mutations,
    };
    let failure = format!(
        "ClickHouse: {table} changed while it was read in {} streams: a merge joined rows inserted before the read began with rows inserted after, or a mutation, partition operation or ALTER ran. Nothing was published; run again, or read the table in one stream (`transfer.parallelism: 1`)",
        groups.len()
    );
    let shares: Vec<Share> = groups
        .iter()
        .map(|partitions| Share {
            predicate: share_predicate(partitions),
            check: Some(ShareCheck {
                query: Statement::new(share_check(&unchanged, partitions)),
                failure: failure.clone(),
            }),
        })
        .collect();
    let longest = shares
        .iter()
        .filter_map(|share| {
            let check = &share.check.as_ref()?.query.sql;
            Some(share.predicate.len().max(check.len()))
        })
        .max()
        .unwrap_or(0);
    if longest > MAX_SHARE_SQL {
        return Ok(None);
    }
    Ok(Some(SnapshotSplit {
        snapshot: None,
        shares,
    }))
}

/// The longest share predicate or check a split writes: well inside the server's default
/// `max_query_size` (256 KiB), with the rest of the statement.
const MAX_SHARE_SQL: usize = 128 * 1024;

/// Whether the table's definition has a TTL, from `create_table_query` where the server has
/// it (a server without it predates TTL).
async fn has_ttl(s: &mut dyn SqlSession, in_tables: &str) -> Result<bool> {
    let described = text(
        s,
        "SELECT toString(count()) FROM system.columns WHERE database = 'system' AND table = 'tables' \
         AND name = 'create_table_query'"
            .into(),
    )
    .await?;
    if described.as_deref() != Some("1") {
        return Ok(false);
    }
    let create = text(
        s,
        format!("SELECT create_table_query FROM system.tables WHERE {in_tables}"),
    )
    .await?;
    Ok(create.is_none_or(|sql| sql.contains(" TTL ")))
}

/// What a share's check finds as it was at the split, besides the parts.
struct Unchanged {
    /// `system.parts` and `system.mutations` rows of the table.
    of_table: String,
    /// Its `system.tables` row.
    in_tables: String,
    /// Its [`definition`].
    defined: String,
    /// Its mutations' ids, as literals.
    mutations: Vec<String>,
}

/// The table's definition as one text: when its metadata was last written (an `ALTER`, or
/// another table put in its place) and a hash of its columns' names and types, which an
/// `ALTER` of columns changes even within the second that time resolves.
fn definition(in_tables: &str, of_table: &str) -> String {
    format!(
        "concat((SELECT toString(metadata_modification_time) FROM system.tables WHERE {in_tables}), ' ', \
                (SELECT toString(cityHash64(arrayStringConcat(arraySort(groupArray(concat(name, ' ', type))), ','))) \
                 FROM system.columns WHERE {of_table}))"
    )
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
/// split, in no part reaching past a horizon, with no mutation and no change of definition
/// since.
fn share_check(unchanged: &Unchanged, partitions: &[Partition]) -> String {
    let ids: Vec<String> = partitions.iter().map(|p| text_literal(&p.id)).collect();
    let rows: i64 = partitions.iter().map(|p| p.rows).sum();
    let Unchanged {
        of_table,
        in_tables,
        defined,
        mutations,
    } = unchanged;
    let new_mutation = if mutations.is_empty() {
        "1".to_owned()
    } else {
        format!("mutation_id NOT IN ({})", mutations.join(", "))
    };
    format!(
        "SELECT toInt64(countIf(min_block_number <= h AND max_block_number > h) = 0 \
                        AND sumIf(rows, max_block_number <= h) = {rows} \
                        AND (SELECT count() FROM system.mutations WHERE {of_table} AND {new_mutation}) = 0 \
                        AND {} = {}) \
         FROM (SELECT min_block_number, max_block_number, rows, {} AS h \
               FROM system.parts WHERE {of_table} AND active AND partition_id IN ({}))",
        definition(in_tables, of_table),
        text_literal(defined),
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
        let mut unchanged = Unchanged {
            of_table: "database = 'd' AND table = 't'".into(),
            in_tables: "database = 'd' AND name = 't'".into(),
            defined: "2026-12-06 18:00:00 42".into(),
            mutations: vec!["'mutation_3.txt'".into()],
        };
        let check = share_check(&unchanged, &share);
        assert!(
            check.contains("sumIf(rows, max_block_number <= h) = 11"),
            "{check}"
        );
        assert!(
            check.contains("AND mutation_id NOT IN ('mutation_3.txt')) = 0"),
            "{check}"
        );
        assert!(
            check.contains("FROM system.columns WHERE database = 'd' AND table = 't')) = '2026-12-06 18:00:00 42'"),
            "{check}"
        );
        assert!(
            check.contains("partition_id IN ('20240101', '2024\\'02')"),
            "{check}"
        );
        unchanged.mutations.clear();
        let check = share_check(&unchanged, &share);
        assert!(check.contains("table = 't' AND 1) = 0"), "{check}");
    }
}
