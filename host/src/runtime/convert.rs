//! The WIT boundary: the model's types (`crate::model`) to and from the ones `bindgen!`
//! generates. Both mirror `wit/strategy.wit` field for field, so every conversion is the
//! same walk, written once per type by the macros below.

use super::bindings::dpone::strategy::{sink as wsink, source as wsrc, types as w};
use crate::model as m;

/// Converts a value to its twin on the other side of the WIT boundary.
pub trait Cross<T> {
    fn cross(self) -> T;
}

macro_rules! same {
    ($($t:ty),*) => {
        $(impl Cross<$t> for $t {
            fn cross(self) -> $t {
                self
            }
        })*
    };
}

same!(bool, u8, i8, u64, i32, i64, f64, String);

impl<A: Cross<B>, B> Cross<Vec<B>> for Vec<A> {
    fn cross(self) -> Vec<B> {
        self.into_iter().map(Cross::cross).collect()
    }
}

impl<A: Cross<B>, B> Cross<Option<B>> for Option<A> {
    fn cross(self) -> Option<B> {
        self.map(Cross::cross)
    }
}

/// Both directions of a record: every field crosses.
macro_rules! record {
    ($wit:ident :: $name:ident { $($field:ident),* }) => {
        impl Cross<$wit::$name> for m::$name {
            fn cross(self) -> $wit::$name {
                $wit::$name { $($field: self.$field.cross()),* }
            }
        }
        impl Cross<m::$name> for $wit::$name {
            fn cross(self) -> m::$name {
                m::$name { $($field: self.$field.cross()),* }
            }
        }
    };
}

/// Both directions of a variant (or enum): unit cases, then cases with one payload.
macro_rules! variant {
    ($wit:ident :: $name:ident { $($unit:ident),* ; $($case:ident),* }) => {
        impl Cross<$wit::$name> for m::$name {
            fn cross(self) -> $wit::$name {
                match self {
                    $(m::$name::$unit => $wit::$name::$unit,)*
                    $(m::$name::$case(x) => $wit::$name::$case(x.cross()),)*
                }
            }
        }
        impl Cross<m::$name> for $wit::$name {
            fn cross(self) -> m::$name {
                match self {
                    $($wit::$name::$unit => m::$name::$unit,)*
                    $($wit::$name::$case(x) => m::$name::$case(x.cross()),)*
                }
            }
        }
    };
}

record!(w::DecimalSpec { precision, scale });
variant!(w::DataType {
    Boolean, Int16, Int32, Int64, Float32, Float64, Text, Bytes, Date, Timestamp,
    TimestampTz, Uuid, Json; Decimal
});
record!(w::Column {
    name,
    data_type,
    nullable
});
record!(w::Schema {
    columns,
    primary_key
});
variant!(w::Value {
    Null; Boolean, Int, Float, Decimal, Text, Bytes, Date, Timestamp, TimestampTz, Uuid, Json
});
variant!(w::Comparison { Eq, Ne, Lt, Le, Gt, Ge; });
record!(w::CompareTerm { column, op, value });
record!(w::RangeTerm {
    column,
    low,
    high,
    high_inclusive
});
record!(w::InTerm { column, values });
variant!(w::Term { ManifestPredicate; Compare, Range, InList, IsNull, IsNotNull });

variant!(wsrc::Pushdown { Full, CursorOnly, None; });
record!(wsrc::SourceCapabilities {
    pushdown,
    cheap_aggregates,
    resumable,
    row_versions,
    change_feed
});
record!(wsrc::CursorBound {
    column,
    after,
    up_to
});
record!(wsrc::RowVersionBound { after, up_to });
record!(wsrc::ScanBounds {
    cursor,
    filter,
    limit,
    row_versions,
    since
});
record!(wsrc::ScanStats {
    rows,
    bytes,
    max_cursor,
    resume
});
variant!(wsrc::RestartReason { None, NoStoredPosition, FeedCreated, StoredPositionExpired; });
record!(wsrc::ChangeWindow {
    restart,
    after,
    up_to,
    retained_bytes
});
variant!(wsrc::ChangePart { Upserts, Deletes; });

variant!(wsink::TargetReads { Native, StagedCopy; });
record!(wsink::SinkCapabilities {
    transactions,
    keys_enforced,
    rename_swap,
    native_partitions,
    append_only_log,
    target_reads,
    transaction_time_limit_ms
});
record!(wsink::KeyCheck {
    rows,
    null_key_rows,
    duplicate_groups,
    sample
});
