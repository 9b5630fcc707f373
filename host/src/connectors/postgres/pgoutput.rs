//! Decoder for the logical replication messages of PostgreSQL's `pgoutput` plugin, protocol
//! version 1 as PostgreSQL 15 writes it
//! (<https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html>).
//!
//! Input is one message: the `data` bytea of one row of
//! `pg_logical_slot_peek_binary_changes(slot, upto_lsn, NULL, 'proto_version', '1',
//! 'publication_names', 'pub')`. All integers are big-endian and strings are NUL-terminated
//! UTF-8. The slot is read without the `binary` option, so every column value arrives in its
//! type's text output format; a binary value is rejected rather than misread as text.
//!
//! The bytes come from outside the process, so [`decode`] never panics: truncated input,
//! an unknown message or tuple-column kind, bad UTF-8, a negative length and trailing bytes
//! after a complete message all return a [`DecodeError`].

use std::fmt;

/// One value of a replicated row (TupleData).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// 'u': an unchanged TOASTed value the message does not carry.
    UnchangedToast,
    /// 't': the value in the column type's text output format.
    Text(Vec<u8>),
}

/// One column of a [`Message::Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (flag bit 1).
    pub key: bool,
}

/// One decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Commit timestamps here and in `Commit` are microseconds since 2000-01-01 UTC.
    Begin {
        final_lsn: u64,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        lsn: u64,
        name: String,
    },
    /// `namespace` is `pg_catalog` where the wire carries the empty string, so callers can
    /// compare it with schema names directly.
    Relation {
        oid: u32,
        namespace: String,
        name: String,
        replica_identity: u8,
        columns: Vec<RelationColumn>,
    },
    /// `namespace` is normalised like `Relation`'s.
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        oid: u32,
        new: Vec<Datum>,
    },
    /// `old` is the 'K' (key) or 'O' (full old row) tuple when the message carries one; `old_is_key` tells which.
    Update {
        oid: u32,
        old: Option<Vec<Datum>>,
        old_is_key: bool,
        new: Vec<Datum>,
    },
    Delete {
        oid: u32,
        old: Vec<Datum>,
        old_is_key: bool,
    },
    Truncate {
        options: u8,
        oids: Vec<u32>,
    },
    /// 'M' logical decoding message.
    Logical {
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Vec<u8>,
    },
}

/// Malformed or unsupported `pgoutput` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one pgoutput message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let Some(&tag) = bytes.first() else {
        return Err(DecodeError("pgoutput: empty message".to_owned()));
    };
    let kind = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        other => {
            return Err(DecodeError(format!(
                "pgoutput: unknown message type {} (protocol version 1 expected)",
                describe_byte(other)
            )));
        }
    };
    // Offsets in errors count from the type byte so they match the bytea as stored.
    let mut r = Reader {
        bytes,
        pos: 1,
        kind,
    };
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64("final LSN")?,
            commit_time: r.i64("commit timestamp")?,
            xid: r.u32("xid")?,
        },
        b'C' => Message::Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_time: r.i64("commit timestamp")?,
        },
        b'O' => Message::Origin {
            lsn: r.u64("origin LSN")?,
            name: r.string("origin name")?,
        },
        b'R' => r.relation()?,
        b'Y' => Message::Type {
            oid: r.u32("type oid")?,
            namespace: catalog_if_empty(r.string("type namespace")?),
            name: r.string("type name")?,
        },
        b'I' => {
            let oid = r.u32("relation oid")?;
            r.expect_marker(b'N', "new tuple marker")?;
            Message::Insert {
                oid,
                new: r.tuple("new tuple")?,
            }
        }
        b'U' => r.update()?,
        b'D' => {
            let oid = r.u32("relation oid")?;
            let old_is_key = match r.u8("old tuple marker")? {
                b'K' => true,
                b'O' => false,
                other => {
                    return Err(r.error(format!(
                        "expected old tuple marker 'K' or 'O', found {}",
                        describe_byte(other)
                    )));
                }
            };
            Message::Delete {
                oid,
                old: r.tuple(if old_is_key { "key tuple" } else { "old tuple" })?,
                old_is_key,
            }
        }
        b'T' => r.truncate()?,
        b'M' => {
            let flags = r.u8("flags")?;
            let lsn = r.u64("message LSN")?;
            let prefix = r.string("prefix")?;
            let len = r.length("content length")?;
            Message::Logical {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.take(len, "content")?.to_vec(),
            }
        }
        // The tag was matched above; repeating the error keeps this total without a panic.
        other => {
            return Err(DecodeError(format!(
                "pgoutput: unknown message type {}",
                describe_byte(other)
            )));
        }
    };
    r.finish()?;
    Ok(message)
}

/// pgoutput abbreviates `pg_catalog` to the empty string to save bytes on the wire.
fn catalog_if_empty(namespace: String) -> String {
    if namespace.is_empty() {
        "pg_catalog".to_owned()
    } else {
        namespace
    }
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}' (0x{b:02x})", char::from(b))
    } else {
        format!("0x{b:02x}")
    }
}

/// Bounds-checked cursor over one message; every read reports what it was after, so an
/// error names the field that did not fit.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn error(&self, detail: impl fmt::Display) -> DecodeError {
        DecodeError(format!(
            "pgoutput {} message: {detail} (at byte {} of {})",
            self.kind,
            self.pos,
            self.bytes.len()
        ))
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(self.error(format_args!(
                "truncated reading {what}: need {n} bytes, {} left",
                self.remaining()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N, what)?;
        <[u8; N]>::try_from(slice).map_err(|_| self.error(format_args!("short read of {what}")))
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// An Int32 byte count or element count, which the protocol never sends negative.
    fn length(&mut self, what: &str) -> Result<usize, DecodeError> {
        let start = self.pos;
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| {
            self.pos = start;
            self.error(format_args!("negative {what} {n}"))
        })
    }

    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error(format_args!("unterminated string for {what}")));
        };
        let text = self.take(len, what)?;
        let text = std::str::from_utf8(text).map_err(|e| {
            self.pos -= len;
            self.error(format_args!("{what} is not valid UTF-8: {e}"))
        })?;
        self.pos += 1;
        Ok(text.to_owned())
    }

    fn expect_marker(&mut self, marker: u8, what: &str) -> Result<(), DecodeError> {
        let found = self.u8(what)?;
        if found == marker {
            Ok(())
        } else {
            self.pos -= 1;
            Err(self.error(format_args!(
                "expected {what} {}, found {}",
                describe_byte(marker),
                describe_byte(found)
            )))
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.error(format_args!("{n} trailing bytes after a complete message"))),
        }
    }

    fn relation(&mut self) -> Result<Message, DecodeError> {
        let oid = self.u32("relation oid")?;
        let namespace = catalog_if_empty(self.string("relation namespace")?);
        let name = self.string("relation name")?;
        let replica_identity = self.u8("replica identity")?;
        let count = self.u16("column count")?;
        // Each column takes at least 10 bytes, which caps the allocation a bogus count can
        // cause.
        let mut columns = Vec::with_capacity(usize::from(count).min(self.remaining() / 10));
        for _ in 0..count {
            let flags = self.u8("column flags")?;
            columns.push(RelationColumn {
                name: self.string("column name")?,
                type_oid: self.u32("column type oid")?,
                type_modifier: self.i32("column type modifier")?,
                key: flags & 1 != 0,
            });
        }
        Ok(Message::Relation {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn update(&mut self) -> Result<Message, DecodeError> {
        let oid = self.u32("relation oid")?;
        let marker_at = self.pos;
        let (old, old_is_key) = match self.u8("tuple marker")? {
            b'K' => (Some(self.tuple("key tuple")?), true),
            b'O' => (Some(self.tuple("old tuple")?), false),
            // No old tuple: the replica identity did not change and is not FULL.
            b'N' => (None, false),
            other => {
                self.pos = marker_at;
                return Err(self.error(format_args!(
                    "expected tuple marker 'K', 'O' or 'N', found {}",
                    describe_byte(other)
                )));
            }
        };
        if old.is_some() {
            self.expect_marker(b'N', "new tuple marker")?;
        }
        Ok(Message::Update {
            oid,
            old,
            old_is_key,
            new: self.tuple("new tuple")?,
        })
    }

    fn truncate(&mut self) -> Result<Message, DecodeError> {
        let count = self.length("relation count")?;
        let options = self.u8("options")?;
        let mut oids = Vec::with_capacity(count.min(self.remaining() / 4));
        for _ in 0..count {
            oids.push(self.u32("relation oid")?);
        }
        Ok(Message::Truncate { options, oids })
    }

    fn tuple(&mut self, what: &str) -> Result<Vec<Datum>, DecodeError> {
        let count = self.u16("tuple column count")?;
        // Each column takes at least one byte, which caps the allocation a bogus count can
        // cause.
        let mut datums = Vec::with_capacity(usize::from(count).min(self.remaining()));
        for column in 0..count {
            let kind_at = self.pos;
            let datum = match self.u8("column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' => {
                    let len = self.length("text value length")?;
                    Datum::Text(self.take(len, "text value")?.to_vec())
                }
                b'b' => {
                    self.pos = kind_at;
                    return Err(self.error(format_args!(
                        "{what} column {column}: binary tuple data ('b') is not requested by \
                         dpone; the slot must be read without the `binary` option"
                    )));
                }
                other => {
                    self.pos = kind_at;
                    return Err(self.error(format_args!(
                        "{what} column {column}: unknown column kind {}",
                        describe_byte(other)
                    )));
                }
            };
            datums.push(datum);
        }
        Ok(datums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a message field by field, in wire order.
    struct Msg(Vec<u8>);

    impl Msg {
        fn new(tag: u8) -> Self {
            Msg(vec![tag])
        }

        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }

        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }

        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }

        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }

        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }

        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }

        fn str(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }

        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }

        fn len_bytes(self, bytes: &[u8]) -> Self {
            let len = i32::try_from(bytes.len()).expect("test value fits in Int32");
            self.i32(len).raw(bytes)
        }

        fn tuple(self, values: &[Datum]) -> Self {
            let count = i16::try_from(values.len()).expect("test tuple fits in Int16");
            values
                .iter()
                .fold(self.i16(count), |msg, value| match value {
                    Datum::Null => msg.u8(b'n'),
                    Datum::UnchangedToast => msg.u8(b'u'),
                    Datum::Text(bytes) => msg.u8(b't').len_bytes(bytes),
                })
        }

        fn build(self) -> Vec<u8> {
            self.0
        }
    }

    fn text(s: &str) -> Datum {
        Datum::Text(s.as_bytes().to_vec())
    }

    fn decode_err(bytes: &[u8]) -> String {
        match decode(bytes) {
            Err(DecodeError(message)) => message,
            Ok(message) => panic!("expected an error for {bytes:?}, decoded {message:?}"),
        }
    }

    fn mixed_row() -> Vec<Datum> {
        vec![
            text("42"),
            Datum::Null,
            Datum::UnchangedToast,
            text("héllo ✓ 日本"),
            text(""),
        ]
    }

    fn insert_message() -> Vec<u8> {
        Msg::new(b'I')
            .u32(16_385)
            .u8(b'N')
            .tuple(&mixed_row())
            .build()
    }

    fn relation_message() -> Vec<u8> {
        Msg::new(b'R')
            .u32(16_385)
            .str("public")
            .str("orders")
            .u8(b'd')
            .i16(3)
            .u8(1)
            .str("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .str("name")
            .u32(1043)
            .i32(68)
            .u8(0)
            .str("prix")
            .u32(1700)
            .i32(655_366)
            .build()
    }

    /// One valid message of every type, for the properties every message must have.
    fn all_messages() -> Vec<Vec<u8>> {
        vec![
            Msg::new(b'B').u64(1).i64(2).u32(3).build(),
            Msg::new(b'C').u8(0).u64(1).u64(2).i64(3).build(),
            Msg::new(b'O').u64(1).str("origin").build(),
            relation_message(),
            Msg::new(b'Y').u32(1).str("public").str("mood").build(),
            insert_message(),
            Msg::new(b'U')
                .u32(1)
                .u8(b'K')
                .tuple(&[text("1")])
                .u8(b'N')
                .tuple(&[text("2")])
                .build(),
            Msg::new(b'D').u32(1).u8(b'O').tuple(&[text("1")]).build(),
            Msg::new(b'T').i32(2).u8(0).u32(1).u32(2).build(),
            Msg::new(b'M')
                .u8(1)
                .u64(1)
                .str("p")
                .len_bytes(b"content")
                .build(),
        ]
    }

    #[test]
    fn decodes_begin() {
        let bytes = Msg::new(b'B')
            .u64(0x0000_0001_6B37_4D48)
            .i64(774_379_223_123_456)
            .u32(3_000_000_000)
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Begin {
                final_lsn: 0x0000_0001_6B37_4D48,
                commit_time: 774_379_223_123_456,
                xid: 3_000_000_000,
            })
        );
    }

    #[test]
    fn decodes_commit() {
        let bytes = Msg::new(b'C').u8(0).u64(100).u64(108).i64(-5).build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Commit {
                flags: 0,
                commit_lsn: 100,
                end_lsn: 108,
                commit_time: -5,
            })
        );
    }

    #[test]
    fn decodes_origin() {
        let bytes = Msg::new(b'O').u64(77).str("node_a").build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Origin {
                lsn: 77,
                name: "node_a".to_owned(),
            })
        );
    }

    #[test]
    fn decodes_relation() {
        assert_eq!(
            decode(&relation_message()),
            Ok(Message::Relation {
                oid: 16_385,
                namespace: "public".to_owned(),
                name: "orders".to_owned(),
                replica_identity: b'd',
                columns: vec![
                    RelationColumn {
                        name: "id".to_owned(),
                        type_oid: 23,
                        type_modifier: -1,
                        key: true,
                    },
                    RelationColumn {
                        name: "name".to_owned(),
                        type_oid: 1043,
                        type_modifier: 68,
                        key: false,
                    },
                    RelationColumn {
                        name: "prix".to_owned(),
                        type_oid: 1700,
                        type_modifier: 655_366,
                        key: false,
                    },
                ],
            })
        );
    }

    #[test]
    fn relation_empty_namespace_is_pg_catalog_and_zero_columns_is_valid() {
        let bytes = Msg::new(b'R')
            .u32(1)
            .str("")
            .str("t")
            .u8(b'n')
            .i16(0)
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Relation {
                oid: 1,
                namespace: "pg_catalog".to_owned(),
                name: "t".to_owned(),
                replica_identity: b'n',
                columns: vec![],
            })
        );
    }

    #[test]
    fn decodes_type() {
        let bytes = Msg::new(b'Y').u32(16_400).str("public").str("mood").build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Type {
                oid: 16_400,
                namespace: "public".to_owned(),
                name: "mood".to_owned(),
            })
        );
        let bytes = Msg::new(b'Y').u32(16_401).str("").str("x").build();
        assert!(matches!(
            decode(&bytes),
            Ok(Message::Type { namespace, .. }) if namespace == "pg_catalog"
        ));
    }

    #[test]
    fn decodes_insert_with_null_toast_text_multibyte_and_empty() {
        let decoded = decode(&insert_message());
        assert_eq!(
            decoded,
            Ok(Message::Insert {
                oid: 16_385,
                new: mixed_row(),
            })
        );
        // The empty string and NULL must stay distinguishable.
        if let Ok(Message::Insert { new, .. }) = decoded {
            assert_eq!(new[4], Datum::Text(Vec::new()));
            assert_ne!(new[4], new[1]);
            assert_eq!(new[3], Datum::Text("héllo ✓ 日本".as_bytes().to_vec()));
        }
    }

    #[test]
    fn decodes_insert_of_zero_columns() {
        let bytes = Msg::new(b'I').u32(5).u8(b'N').i16(0).build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Insert {
                oid: 5,
                new: vec![]
            })
        );
    }

    #[test]
    fn decodes_update_with_key_tuple() {
        let bytes = Msg::new(b'U')
            .u32(16_385)
            .u8(b'K')
            .tuple(&[text("1"), Datum::Null])
            .u8(b'N')
            .tuple(&[text("2"), text("b")])
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Update {
                oid: 16_385,
                old: Some(vec![text("1"), Datum::Null]),
                old_is_key: true,
                new: vec![text("2"), text("b")],
            })
        );
    }

    #[test]
    fn decodes_update_with_full_old_tuple() {
        let bytes = Msg::new(b'U')
            .u32(16_385)
            .u8(b'O')
            .tuple(&[text("1"), text("a"), Datum::Null])
            .u8(b'N')
            .tuple(&[text("1"), text("b"), Datum::UnchangedToast])
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Update {
                oid: 16_385,
                old: Some(vec![text("1"), text("a"), Datum::Null]),
                old_is_key: false,
                new: vec![text("1"), text("b"), Datum::UnchangedToast],
            })
        );
    }

    #[test]
    fn decodes_update_without_old_tuple() {
        let bytes = Msg::new(b'U')
            .u32(16_385)
            .u8(b'N')
            .tuple(&mixed_row())
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Update {
                oid: 16_385,
                old: None,
                old_is_key: false,
                new: mixed_row(),
            })
        );
    }

    #[test]
    fn update_rejects_bad_markers() {
        let bytes = Msg::new(b'U').u32(1).u8(b'X').i16(0).build();
        assert!(decode_err(&bytes).contains("'X'"));
        // An old tuple must be followed by 'N', not another old tuple.
        let bytes = Msg::new(b'U')
            .u32(1)
            .u8(b'K')
            .tuple(&[text("1")])
            .u8(b'O')
            .tuple(&[text("1")])
            .build();
        assert!(decode_err(&bytes).contains("new tuple marker"));
    }

    #[test]
    fn decodes_delete_with_key_and_full_old_tuples() {
        let bytes = Msg::new(b'D').u32(9).u8(b'K').tuple(&[text("7")]).build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Delete {
                oid: 9,
                old: vec![text("7")],
                old_is_key: true,
            })
        );
        let bytes = Msg::new(b'D')
            .u32(9)
            .u8(b'O')
            .tuple(&[text("7"), Datum::Null])
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Delete {
                oid: 9,
                old: vec![text("7"), Datum::Null],
                old_is_key: false,
            })
        );
    }

    #[test]
    fn delete_and_insert_reject_wrong_markers() {
        let bytes = Msg::new(b'D').u32(9).u8(b'N').tuple(&[text("7")]).build();
        assert!(decode_err(&bytes).contains("'N'"));
        let bytes = Msg::new(b'I').u32(9).u8(b'K').tuple(&[text("7")]).build();
        assert!(decode_err(&bytes).contains("'K'"));
    }

    #[test]
    fn decodes_truncate() {
        let bytes = Msg::new(b'T')
            .i32(3)
            .u8(3)
            .u32(16_385)
            .u32(16_386)
            .u32(4_000_000_000)
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Truncate {
                options: 3,
                oids: vec![16_385, 16_386, 4_000_000_000],
            })
        );
    }

    #[test]
    fn truncate_with_huge_or_negative_count_errors() {
        let bytes = Msg::new(b'T').i32(i32::MAX).u8(0).u32(1).build();
        assert!(decode_err(&bytes).contains("truncated"));
        let bytes = Msg::new(b'T').i32(-1).u8(0).build();
        assert!(decode_err(&bytes).contains("negative"));
    }

    #[test]
    fn decodes_logical_messages() {
        let bytes = Msg::new(b'M')
            .u8(1)
            .u64(500)
            .str("dpone")
            .len_bytes(b"\x00\xffpayload")
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Logical {
                transactional: true,
                lsn: 500,
                prefix: "dpone".to_owned(),
                content: b"\x00\xffpayload".to_vec(),
            })
        );
        let bytes = Msg::new(b'M')
            .u8(0)
            .u64(501)
            .str("p")
            .len_bytes(b"")
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Logical {
                transactional: false,
                lsn: 501,
                prefix: "p".to_owned(),
                content: vec![],
            })
        );
    }

    #[test]
    fn every_prefix_of_an_insert_errors() {
        let bytes = insert_message();
        for cut in 0..bytes.len() {
            let message = decode_err(&bytes[..cut]);
            assert!(!message.is_empty(), "cut at {cut}");
        }
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn every_prefix_of_every_message_errors() {
        for bytes in all_messages() {
            assert!(decode(&bytes).is_ok(), "{bytes:?}");
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "{bytes:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // Overwrite every byte of every valid message with values that steer the decoder
        // into other branches: markers, column kinds, sign bits and NULs.
        let probes = [
            0x00, 0x01, 0x7f, 0x80, 0xff, b'N', b'K', b'O', b'n', b'u', b't', b'b',
        ];
        for bytes in all_messages() {
            for at in 0..bytes.len() {
                for probe in probes {
                    let mut corrupted = bytes.clone();
                    corrupted[at] = probe;
                    let _ = decode(&corrupted);
                }
            }
        }
    }

    #[test]
    fn truncation_errors_name_the_field() {
        let bytes = insert_message();
        // Cut inside the relation oid, inside the first text length, and inside its value.
        assert!(decode_err(&bytes[..3]).contains("relation oid"));
        assert!(decode_err(&bytes[..10]).contains("text value length"));
        assert!(decode_err(&bytes[..13]).contains("reading text value: need 2 bytes, 0 left"));
        assert_eq!(decode_err(&[]), "pgoutput: empty message");
    }

    #[test]
    fn trailing_bytes_error() {
        for bytes in all_messages() {
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_err(&longer).contains("trailing"), "{bytes:?}");
        }
    }

    #[test]
    fn unknown_message_type_is_named() {
        let message = decode_err(&Msg::new(b'Z').u32(0).build());
        assert!(message.contains("'Z'"), "{message}");
        let message = decode_err(&[0x01]);
        assert!(message.contains("0x01"), "{message}");
        // Streaming messages belong to protocol version 2 and must not be guessed at.
        assert!(decode_err(&Msg::new(b'S').u32(1).u8(1).build()).contains("'S'"));
    }

    #[test]
    fn binary_column_is_rejected() {
        let bytes = Msg::new(b'I')
            .u32(1)
            .u8(b'N')
            .i16(2)
            .u8(b't')
            .len_bytes(b"1")
            .u8(b'b')
            .len_bytes(&[0, 0, 0, 1])
            .build();
        let message = decode_err(&bytes);
        assert!(message.contains("binary"), "{message}");
        assert!(message.contains("not requested by dpone"), "{message}");
        assert!(message.contains("column 1"), "{message}");
    }

    #[test]
    fn unknown_column_kind_errors() {
        let bytes = Msg::new(b'I').u32(1).u8(b'N').i16(1).u8(b'x').build();
        assert!(decode_err(&bytes).contains("unknown column kind 'x'"));
    }

    #[test]
    fn negative_text_length_errors() {
        let bytes = Msg::new(b'I')
            .u32(1)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(-1)
            .build();
        assert!(decode_err(&bytes).contains("negative text value length -1"));
    }

    #[test]
    fn huge_column_count_errors_without_allocating_it() {
        let bytes = Msg::new(b'I').u32(1).u8(b'N').i16(-1).build();
        assert!(decode_err(&bytes).contains("truncated"));
        let bytes = Msg::new(b'R')
            .u32(1)
            .str("")
            .str("t")
            .u8(b'd')
            .i16(-1)
            .build();
        assert!(decode_err(&bytes).contains("truncated"));
    }

    #[test]
    fn bad_strings_error() {
        let unterminated = Msg::new(b'O').u64(1).raw(b"name").build();
        assert!(decode_err(&unterminated).contains("unterminated string for origin name"));
        let invalid = Msg::new(b'O').u64(1).raw(b"\xff\xfe\0").build();
        assert!(decode_err(&invalid).contains("not valid UTF-8"));
    }

    #[test]
    fn text_values_keep_non_utf8_bytes() {
        // Text output of a non-UTF-8 database is still a value; judging it is not our job.
        let bytes = Msg::new(b'I')
            .u32(1)
            .u8(b'N')
            .tuple(&[Datum::Text(vec![0xff, 0x00])])
            .build();
        assert_eq!(
            decode(&bytes),
            Ok(Message::Insert {
                oid: 1,
                new: vec![Datum::Text(vec![0xff, 0x00])],
            })
        );
    }

    #[test]
    fn error_displays_its_message() {
        let error = DecodeError("boom".to_owned());
        assert_eq!(error.to_string(), "boom");
        let boxed: Box<dyn std::error::Error> = Box::new(error);
        assert_eq!(boxed.to_string(), "boom");
    }
}
