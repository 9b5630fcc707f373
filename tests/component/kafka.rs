//! Kafka against the private broker of `cargo xtask test` (tansu, no producer transactions:
//! `exactly_once: false`): a topic as a table (net changes only, tombstones, the view
//! catching up on records others wrote), a topic that is not compacted, and a bounded topic
//! as a source (resuming from its position, bad records failing with partition and offset
//! or going to a dead-letter topic).

use dpone_host::Kind;
use dpone_host::connectors::kafka::client::{KafkaClient, TopicProducer};
use dpone_host::connectors::kafka::config::KafkaConfig;
use dpone_host::connectors::kafka::types::{Codec, Offsets, Record};
use dpone_host::model::{Column, DataType, Schema, Value};

use crate::support::{Db, kafka_brokers, run, run_fails, scratch};

fn client(brokers: &str, topic: &str) -> (KafkaClient, KafkaConfig) {
    let yaml = format!("brokers: \"{brokers}\"\ntopic: {topic}\n");
    let config: KafkaConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    (KafkaClient::new(&config, Kind::Sink), config)
}

/// Deletes `topic`, so a test starts without it (a pipeline's view then starts empty), and
/// creates it again compacted with `partitions` when given; returns a client of it.
pub async fn fresh_topic(brokers: &str, topic: &str, partitions: Option<i32>) -> KafkaClient {
    let (client, _) = client(brokers, topic);
    client.delete_topic(topic).await.unwrap();
    if let Some(n) = partitions {
        client.create_topic(topic, n, None, true).await.unwrap();
    }
    client
}

/// Every record of `topic`, in partition then offset order.
async fn records(client: &KafkaClient, topic: &str) -> Vec<Record> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let collect = async {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend(chunk);
        }
        all
    };
    let start = Offsets::new();
    let (read, mut all) = tokio::join!(client.read(topic, &start, tx), collect);
    read.unwrap();
    all.sort_by_key(|r: &Record| (r.partition, r.offset));
    all
}

fn schema() -> Schema {
    let col = |name: &str, data_type, nullable| Column {
        name: name.into(),
        data_type,
        nullable,
    };
    Schema {
        columns: vec![
            col("id", DataType::Int64, false),
            col("note", DataType::Text, true),
        ],
        primary_key: vec!["id".into()],
    }
}

/// The topic's rows as a table keyed by `id`, sorted.
async fn table(client: &KafkaClient, topic: &str) -> Vec<(i64, Option<String>)> {
    let codec = Codec::new(&schema(), &["id".into()]).unwrap();
    let rows = dpone_host::connectors::kafka::read_table(client, topic, &codec)
        .await
        .unwrap();
    let mut out: Vec<(i64, Option<String>)> = rows
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Int(id), Value::Text(t)) => (*id, Some(t.clone())),
            (Value::Int(id), _) => (*id, None),
            other => panic!("{other:?}"),
        })
        .collect();
    out.sort();
    out
}

fn sink_manifest(dir: &std::path::Path, brokers: &str, topic: &str, strategy: &str) -> String {
    format!(
        "pipeline: {topic}\nsource: {{ kind: sqlite, path: \"{src}\", table: items }}\n\
         sink:\n  kind: kafka\n  brokers: \"{brokers}\"\n  topic: {topic}\n  exactly_once: false\n  strategy: {{ {strategy} }}\n\
         state: {{ kind: sqlite, path: \"{state}\" }}\n",
        src = dir.join("src.db").display(),
        state = dir.join("state.db").display(),
    )
}

/// snapshot_diff onto a topic: the first run produces every row; the second only the net
/// change (one upsert per changed or new row, one tombstone per deleted row, nothing for
/// unchanged rows); a record another producer wrote in between is in the view the third run
/// compares with, so it is overwritten by the source's row.
#[tokio::test]
async fn a_topic_as_a_table_gets_only_net_changes() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let topic = "dpone_test_net_changes";
    let dir = scratch("kafka_net_changes");
    let client = fresh_topic(&brokers, topic, None).await;
    let mut src = Db::sqlite(&dir.join("src.db")).await;
    src.exec(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT);
         INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, NULL);",
    )
    .await;
    let yaml = sink_manifest(
        &dir,
        &brokers,
        topic,
        "mode: snapshot_diff, unique_key: [id], diff: { delete_policy: hard_delete }",
    );
    run(&yaml, None).await.unwrap();
    assert_eq!(records(&client, topic).await.len(), 4);
    assert_eq!(
        table(&client, topic).await,
        vec![
            (1, Some("a".into())),
            (2, Some("b".into())),
            (3, Some("c".into())),
            (4, None)
        ]
    );

    src.exec("UPDATE items SET note = 'B' WHERE id = 2; DELETE FROM items WHERE id = 3; INSERT INTO items VALUES (5, 'e');")
        .await;
    run(&yaml, None).await.unwrap();
    let all = records(&client, topic).await;
    assert_eq!(all.len(), 7, "4 first records + 2 upserts + 1 tombstone");
    let tombstones: Vec<&Record> = all.iter().filter(|r| r.value.is_none()).collect();
    assert_eq!(tombstones.len(), 1);
    assert_eq!(tombstones[0].key.as_deref(), Some(&br#"{"id":3}"#[..]));
    assert_eq!(
        table(&client, topic).await,
        vec![
            (1, Some("a".into())),
            (2, Some("B".into())),
            (4, None),
            (5, Some("e".into()))
        ]
    );

    // Someone else changes key 1; the next run sees it in the view and restores the source's
    // row, producing that one record only.
    let codec = Codec::new(&schema(), &["id".into()]).unwrap();
    let mut other = TopicProducer::open(&client, topic, None).await.unwrap();
    let row = vec![Value::Int(1), Value::Text("someone else".into())];
    other
        .send(
            codec.encode_key(&row).unwrap().as_deref(),
            Some(&codec.encode_value(&row).unwrap()),
        )
        .await
        .unwrap();
    other.commit().await.unwrap();
    run(&yaml, None).await.unwrap();
    assert_eq!(records(&client, topic).await.len(), 9);
    assert_eq!(table(&client, topic).await[0], (1, Some("a".into())));

    // No change, no record.
    run(&yaml, None).await.unwrap();
    assert_eq!(records(&client, topic).await.len(), 9);
}

/// A topic that exists but is not compacted is no table: the run refuses it naming
/// `sink.append_only`, before producing anything.
#[tokio::test]
async fn a_topic_that_is_not_compacted_is_refused() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let topic = "dpone_test_not_compacted";
    let dir = scratch("kafka_not_compacted");
    let (client, _) = client(&brokers, topic);
    client.delete_topic(topic).await.unwrap();
    client.create_topic(topic, 1, None, false).await.unwrap();
    let mut src = Db::sqlite(&dir.join("src.db")).await;
    src.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT); INSERT INTO items VALUES (1, 'a');")
        .await;
    let yaml = sink_manifest(
        &dir,
        &brokers,
        topic,
        "mode: full_refresh, unique_key: [id]",
    );
    let e = run_fails(&yaml, None, Kind::Config).await;
    assert_eq!(e.field.as_deref(), Some("sink.append_only"), "{e}");
    assert!(e.message.contains("cleanup.policy"), "{e}");
    assert!(records(&client, topic).await.is_empty());
}

/// Incremental by `seq`: the window since the stored position.
const MERGE: &str = "mode: incremental_merge, unique_key: [id], cursor_column: seq";

fn source_manifest(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    extra: &str,
    strategy: &str,
) -> String {
    format!(
        "pipeline: {topic}\nsource:\n  kind: kafka\n  brokers: \"{brokers}\"\n  topic: {topic}\n  primary_key: [id]\n  \
         columns: [{{ name: id, type: int64, nullable: false }}, {{ name: note, type: text }}, {{ name: seq, type: int64, nullable: false }}]{extra}\n\
         sink:\n  kind: sqlite\n  path: \"{dst}\"\n  table: items\n  strategy: {{ {strategy} }}\n\
         state: {{ kind: sqlite, path: \"{state}\" }}\n",
        dst = dir.join("dst.db").display(),
        state = dir.join("state.db").display(),
    )
}

async fn produce(client: &KafkaClient, topic: &str, records: &[(&str, Option<&str>)]) {
    let mut p = TopicProducer::open(client, topic, None).await.unwrap();
    for (key, value) in records {
        p.send(Some(key.as_bytes()), value.map(str::as_bytes))
            .await
            .unwrap();
    }
    p.commit().await.unwrap();
}

/// A bounded topic as an incremental_merge source: the second run reads only what followed
/// the stored position (the first run's records are not read again), by key the last
/// record wins; a record that does not decode fails the run naming its partition and
/// offset, and with a dead-letter topic goes there instead.
#[tokio::test]
async fn a_topic_source_resumes_from_its_position_and_refuses_bad_records() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let topic = "dpone_test_source";
    let dead = "dpone_test_source_dead";
    let dir = scratch("kafka_source");
    let (client, _) = client(&brokers, topic);
    for t in [topic, dead] {
        client.delete_topic(t).await.unwrap();
        client.create_topic(t, 2, None, true).await.unwrap();
    }
    produce(
        &client,
        topic,
        &[
            (r#"{"id":1}"#, Some(r#"{"id":1,"note":"a","seq":1}"#)),
            (r#"{"id":2}"#, Some(r#"{"id":2,"note":"b","seq":2}"#)),
            (r#"{"id":1}"#, Some(r#"{"id":1,"note":"a2","seq":3}"#)),
        ],
    )
    .await;
    let yaml = source_manifest(&dir, &brokers, topic, "", MERGE);
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(report.rows_read, 2, "by key the last record wins");
    let mut dst = Db::sqlite(&dir.join("dst.db")).await;
    let rows = |v: &[(&str, &str)]| -> Vec<Vec<Option<String>>> {
        v.iter()
            .map(|(a, b)| vec![Some(a.to_string()), Some(b.to_string())])
            .collect()
    };
    assert_eq!(
        dst.rows("SELECT CAST(id AS TEXT), note FROM items ORDER BY id")
            .await,
        rows(&[("1", "a2"), ("2", "b")])
    );

    produce(
        &client,
        topic,
        &[(r#"{"id":3}"#, Some(r#"{"id":3,"note":"c","seq":4}"#))],
    )
    .await;
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(
        report.rows_read, 1,
        "only what followed the stored position"
    );
    assert_eq!(
        dst.rows("SELECT CAST(id AS TEXT), note FROM items ORDER BY id")
            .await,
        rows(&[("1", "a2"), ("2", "b"), ("3", "c")])
    );

    produce(
        &client,
        topic,
        &[(r#"{"id":4}"#, Some(r#"{"id":"four","seq":5}"#))],
    )
    .await;
    let e = run_fails(&yaml, None, Kind::Source).await;
    assert!(
        e.message.contains(&format!("topic {topic} partition")),
        "{e}"
    );
    assert!(
        e.message.contains("offset") && e.message.contains("column id"),
        "{e}"
    );

    let yaml = source_manifest(
        &dir,
        &brokers,
        topic,
        &format!("\n  dead_letter_topic: {dead}"),
        MERGE,
    );
    run(&yaml, None).await.unwrap();
    let set_aside = records(&client, dead).await;
    assert_eq!(set_aside.len(), 1);
    assert_eq!(
        set_aside[0].value.as_deref(),
        Some(&br#"{"id":"four","seq":5}"#[..])
    );
}

/// A topic as a table source (snapshot_diff reads the compacted view): an empty topic is an
/// empty table, not an error; by key the last record wins; a tombstone removes its key, so
/// the target loses the row.
#[tokio::test]
async fn an_empty_topic_then_a_tombstone_as_a_table_source() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let topic = "dpone_test_source_table";
    let dir = scratch("kafka_source_table");
    let client = fresh_topic(&brokers, topic, Some(3)).await;
    let yaml = source_manifest(
        &dir,
        &brokers,
        topic,
        "",
        "mode: snapshot_diff, unique_key: [id], diff: { delete_policy: hard_delete }",
    );
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(report.rows_read, 0);
    let mut dst = Db::sqlite(&dir.join("dst.db")).await;
    let table = "SELECT CAST(id AS TEXT), note FROM items ORDER BY id";
    assert!(dst.rows(table).await.is_empty());

    produce(
        &client,
        topic,
        &[
            (r#"{"id":1}"#, Some(r#"{"id":1,"note":"a","seq":1}"#)),
            (r#"{"id":2}"#, Some(r#"{"id":2,"note":"b","seq":2}"#)),
            (r#"{"id":3}"#, Some(r#"{"id":3,"note":"c","seq":3}"#)),
        ],
    )
    .await;
    run(&yaml, None).await.unwrap();
    assert_eq!(dst.rows(table).await.len(), 3);

    produce(
        &client,
        topic,
        &[
            (r#"{"id":2}"#, None),
            (r#"{"id":3}"#, Some(r#"{"id":3,"note":"c2","seq":4}"#)),
        ],
    )
    .await;
    run(&yaml, None).await.unwrap();
    let text = |v: &[(&str, &str)]| -> Vec<Vec<Option<String>>> {
        v.iter()
            .map(|(a, b)| vec![Some(a.to_string()), Some(b.to_string())])
            .collect()
    };
    assert_eq!(dst.rows(table).await, text(&[("1", "a"), ("3", "c2")]));
}

/// The `format: avro` fields of a manifest section.
fn avro(registry: &str) -> String {
    format!("\n  format: avro\n  schema_registry: {{ url: \"{registry}\" }}")
}

/// Avro with the registry (its test double): the sink registers `<topic>-key` and
/// `<topic>-value` once and frames every record with their ids; the topic reads back as the
/// source's table (a deleted row as a tombstone); an Avro source reads the same topic into
/// a table, the tombstoned key gone.
#[tokio::test]
async fn avro_records_round_trip_through_the_registry() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let registry = crate::registry::Registry::start().await;
    let topic = "dpone_test_avro";
    let dir = scratch("kafka_avro");
    let client = fresh_topic(&brokers, topic, None).await;
    let mut src = Db::sqlite(&dir.join("src.db")).await;
    src.exec(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT);
         INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, NULL);",
    )
    .await;
    let yaml = sink_manifest(
        &dir,
        &brokers,
        topic,
        "mode: snapshot_diff, unique_key: [id], diff: { delete_policy: hard_delete }",
    )
    .replace(
        &format!("  topic: {topic}\n"),
        &format!("  topic: {topic}{}\n", avro(&registry.url)),
    );
    run(&yaml, None).await.unwrap();
    src.exec("DELETE FROM items WHERE id = 2; UPDATE items SET note = 'c' WHERE id = 3;")
        .await;
    run(&yaml, None).await.unwrap();
    assert_eq!(registry.versions(&format!("{topic}-key")), 1);
    assert_eq!(registry.versions(&format!("{topic}-value")), 1);
    let all = records(&client, topic).await;
    assert_eq!(all.len(), 5, "3 rows, then 1 upsert and 1 tombstone");
    for r in &all {
        assert_eq!(r.key.as_deref().map(|k| k[0]), Some(0), "framed key");
        if let Some(v) = &r.value {
            assert_eq!(v[0], 0, "framed value");
        }
    }

    let source = format!(
        "pipeline: {topic}_read\nsource:\n  kind: kafka\n  brokers: \"{brokers}\"\n  topic: {topic}{}\n  primary_key: [id]\n  \
         columns: [{{ name: id, type: int64, nullable: false }}, {{ name: note, type: text }}]\n\
         sink:\n  kind: sqlite\n  path: \"{dst}\"\n  table: items\n  strategy: {{ mode: full_refresh, unique_key: [id] }}\n\
         state: {{ kind: sqlite, path: \"{state}\" }}\n",
        avro(&registry.url),
        dst = dir.join("dst.db").display(),
        state = dir.join("read_state.db").display(),
    );
    run(&source, None).await.unwrap();
    let mut dst = Db::sqlite(&dir.join("dst.db")).await;
    assert_eq!(
        dst.rows("SELECT CAST(id AS TEXT), note FROM items ORDER BY id")
            .await,
        vec![
            vec![Some("1".to_string()), Some("a".to_string())],
            vec![Some("3".to_string()), Some("c".to_string())],
        ]
    );
}

/// A value schema the registry finds incompatible with the subject's latest version (the
/// key column changed type) fails the run before anything is produced or created; a record
/// whose schema id the registry does not know fails an Avro source naming its offset.
#[tokio::test]
async fn avro_incompatible_schemas_and_unknown_ids_are_refused() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let registry = crate::registry::Registry::start().await;
    let topic = "dpone_test_avro_incompatible";
    let dir = scratch("kafka_avro_incompatible");
    let client = fresh_topic(&brokers, topic, None).await;
    registry.register(
        &format!("{topic}-value"),
        r#"{"type":"record","name":"old","fields":[{"name":"id","type":"string"}]}"#,
    );
    let mut src = Db::sqlite(&dir.join("src.db")).await;
    src.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT); INSERT INTO items VALUES (1, 'a');")
        .await;
    let yaml = sink_manifest(
        &dir,
        &brokers,
        topic,
        "mode: full_refresh, unique_key: [id]",
    )
    .replace(
        &format!("  topic: {topic}\n"),
        &format!("  topic: {topic}{}\n", avro(&registry.url)),
    );
    let e = run_fails(&yaml, None, Kind::Sink).await;
    assert!(e.message.contains("not compatible"), "{e}");
    assert!(e.message.contains(&format!("{topic}-value")), "{e}");
    assert!(
        client.partitions(topic).await.unwrap().is_none(),
        "nothing produced, no topic created"
    );
    assert_eq!(registry.versions(&format!("{topic}-value")), 1);

    client.create_topic(topic, 1, None, true).await.unwrap();
    let mut unknown = vec![0u8, 0, 0, 3, 231];
    unknown.extend_from_slice(&[2, 2, b'x']);
    let mut p = TopicProducer::open(&client, topic, None).await.unwrap();
    p.send(None, Some(&unknown)).await.unwrap();
    p.commit().await.unwrap();
    let source = format!(
        "pipeline: {topic}_read\nsource:\n  kind: kafka\n  brokers: \"{brokers}\"\n  topic: {topic}{}\n  \
         columns: [{{ name: id, type: int64 }}]\n\
         sink:\n  kind: sqlite\n  path: \"{dst}\"\n  table: items\n  strategy: {{ mode: full_refresh }}\n\
         state: {{ kind: sqlite, path: \"{state}\" }}\n",
        avro(&registry.url),
        dst = dir.join("dst.db").display(),
        state = dir.join("read_state.db").display(),
    );
    let e = run_fails(&source, None, Kind::Source).await;
    assert!(e.message.contains("schema id 999 is unknown"), "{e}");
    assert!(
        e.message
            .contains(&format!("topic {topic} partition 0 offset 0")),
        "{e}"
    );
}

/// Partitions added between runs: a partition the stored position does not name is read
/// from its first offset, the others from their position. (The local broker cannot add
/// partitions, CreatePartitions is not served, so a position that names only partition 0 of
/// a 3-partition topic stands in for one stored before partitions 1 and 2 existed.)
#[tokio::test]
async fn a_partition_missing_from_the_position_is_read_from_its_start() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let topic = "dpone_test_new_partitions";
    let client = fresh_topic(&brokers, topic, Some(3)).await;
    let keys: Vec<String> = (0..60).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
    let batch = |range: std::ops::Range<usize>| -> Vec<(&str, Option<&str>)> {
        keys[range]
            .iter()
            .map(|k| (k.as_str(), Some("{}")))
            .collect()
    };
    produce(&client, topic, &batch(0..30)).await;
    let read = async |start: &Offsets| {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let collect = async {
            let mut got = Vec::new();
            while let Some(chunk) = rx.recv().await {
                got.extend(chunk);
            }
            got
        };
        let (end, got) = tokio::join!(client.read(topic, start, tx), collect);
        (end.unwrap(), got)
    };
    let (first, all) = read(&Offsets::new()).await;
    assert_eq!(all.len(), 30);
    assert!(
        (0..3).all(|p| all.iter().any(|r| r.partition == p)),
        "keys spread over the partitions"
    );
    produce(&client, topic, &batch(30..60)).await;

    let start = Offsets::from([(0, first[&0])]);
    let (end, got) = read(&start).await;
    let expected = 60 - all.iter().filter(|r| r.partition == 0).count();
    assert_eq!(
        got.len(),
        expected,
        "partition 0 from its position, 1 and 2 whole"
    );
    assert!(
        got.iter()
            .all(|r| r.partition != 0 || r.offset >= first[&0])
    );
    let (whole_end, _) = read(&Offsets::new()).await;
    assert_eq!(end, whole_end);
}
