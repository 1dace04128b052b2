//! The catalog relations Postgres has and Weir answers with no rows
//! (`pg_index`, `pg_constraint`, `pg_policy` …), with the columns psql
//! and drivers read.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float32Array, Int16Array, Int32Array, Int64Array};
use arrow::array::{ListArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use weir_sql::SqlError;

/// A column of a catalog relation Weir serves empty.
enum Col {
    Oid,
    Int2,
    Int4,
    Float4,
    Bool,
    Text,
    TextArray,
}

/// An empty relation with `columns`.
fn empty(columns: &[(&str, Col)]) -> Result<RecordBatch, SqlError> {
    let columns: Vec<(&str, ArrayRef)> = columns
        .iter()
        .map(|(name, col)| {
            let array: ArrayRef = match col {
                Col::Oid => Arc::new(Int64Array::from(Vec::<i64>::new())),
                Col::Int2 => Arc::new(Int16Array::from(Vec::<i16>::new())),
                Col::Int4 => Arc::new(Int32Array::from(Vec::<i32>::new())),
                Col::Float4 => Arc::new(Float32Array::from(Vec::<f32>::new())),
                Col::Bool => Arc::new(BooleanArray::from(Vec::<bool>::new())),
                Col::Text => Arc::new(StringArray::from(Vec::<&str>::new())),
                Col::TextArray => {
                    let item = Arc::new(Field::new("item", DataType::Utf8, true));
                    Arc::new(ListArray::new_null(item, 0))
                }
            };
            (*name, array)
        })
        .collect();
    RecordBatch::try_from_iter(columns).map_err(SqlError::from)
}

/// The relations Postgres has and Weir answers with no rows.
pub(crate) fn relations() -> Result<Vec<(&'static str, RecordBatch)>, SqlError> {
    use Col::*;
    Ok(vec![
        (
            "pg_constraint",
            empty(&[
                ("oid", Oid),
                ("conname", Text),
                ("connamespace", Oid),
                ("contype", Text),
                ("condeferrable", Bool),
                ("condeferred", Bool),
                ("convalidated", Bool),
                ("conrelid", Oid),
                ("contypid", Oid),
                ("conindid", Oid),
                ("conparentid", Oid),
                ("confrelid", Oid),
                ("conislocal", Bool),
                ("coninhcount", Int2),
                ("connoinherit", Bool),
                ("conkey", TextArray),
                ("confkey", TextArray),
            ])?,
        ),
        (
            "pg_foreign_table",
            empty(&[
                ("ftrelid", Oid),
                ("ftserver", Oid),
                ("ftoptions", TextArray),
            ])?,
        ),
        (
            "pg_index",
            empty(&[
                ("indexrelid", Oid),
                ("indrelid", Oid),
                ("indnatts", Int2),
                ("indnkeyatts", Int2),
                ("indisunique", Bool),
                ("indnullsnotdistinct", Bool),
                ("indisprimary", Bool),
                ("indisexclusion", Bool),
                ("indimmediate", Bool),
                ("indisclustered", Bool),
                ("indisvalid", Bool),
                ("indisready", Bool),
                ("indislive", Bool),
                ("indisreplident", Bool),
                ("indkey", TextArray),
            ])?,
        ),
        (
            "pg_inherits",
            empty(&[
                ("inhrelid", Oid),
                ("inhparent", Oid),
                ("inhseqno", Int4),
                ("inhdetachpending", Bool),
            ])?,
        ),
        (
            "pg_policy",
            empty(&[
                ("oid", Oid),
                ("polname", Text),
                ("polrelid", Oid),
                ("polcmd", Text),
                ("polpermissive", Bool),
                ("polroles", TextArray),
                ("polqual", Text),
                ("polwithcheck", Text),
            ])?,
        ),
        (
            "pg_publication",
            empty(&[
                ("oid", Oid),
                ("pubname", Text),
                ("pubowner", Oid),
                ("puballtables", Bool),
                ("pubinsert", Bool),
                ("pubupdate", Bool),
                ("pubdelete", Bool),
                ("pubtruncate", Bool),
                ("pubviaroot", Bool),
            ])?,
        ),
        (
            "pg_publication_namespace",
            empty(&[("oid", Oid), ("pnpubid", Oid), ("pnnspid", Oid)])?,
        ),
        (
            "pg_publication_rel",
            empty(&[
                ("oid", Oid),
                ("prpubid", Oid),
                ("prrelid", Oid),
                ("prqual", Text),
                ("prattrs", TextArray),
            ])?,
        ),
        (
            "pg_rewrite",
            empty(&[
                ("oid", Oid),
                ("rulename", Text),
                ("ev_class", Oid),
                ("ev_type", Text),
                ("ev_enabled", Text),
                ("is_instead", Bool),
            ])?,
        ),
        (
            "pg_auth_members",
            empty(&[
                ("oid", Oid),
                ("roleid", Oid),
                ("member", Oid),
                ("grantor", Oid),
                ("admin_option", Bool),
            ])?,
        ),
        (
            "pg_shdescription",
            empty(&[("objoid", Oid), ("classoid", Oid), ("description", Text)])?,
        ),
        (
            "pg_statistic_ext",
            empty(&[
                ("oid", Oid),
                ("stxrelid", Oid),
                ("stxname", Text),
                ("stxnamespace", Oid),
                ("stxowner", Oid),
                ("stxstattarget", Int2),
                ("stxkeys", TextArray),
                ("stxkind", TextArray),
            ])?,
        ),
        (
            "pg_trigger",
            empty(&[
                ("oid", Oid),
                ("tgrelid", Oid),
                ("tgparentid", Oid),
                ("tgname", Text),
                ("tgfoid", Oid),
                ("tgtype", Int2),
                ("tgenabled", Text),
                ("tgisinternal", Bool),
                ("tgconstraint", Oid),
            ])?,
        ),
        (
            "pg_views",
            empty(&[
                ("schemaname", Text),
                ("viewname", Text),
                ("viewowner", Text),
                ("definition", Text),
            ])?,
        ),
        (
            "pg_matviews",
            empty(&[
                ("schemaname", Text),
                ("matviewname", Text),
                ("matviewowner", Text),
                ("definition", Text),
            ])?,
        ),
        (
            "pg_sequence",
            empty(&[
                ("seqrelid", Oid),
                ("seqtypid", Oid),
                ("seqstart", Oid),
                ("seqincrement", Oid),
            ])?,
        ),
        (
            "pg_proc",
            empty(&[
                ("oid", Oid),
                ("proname", Text),
                ("pronamespace", Oid),
                ("proowner", Oid),
                ("prokind", Text),
                ("prorettype", Oid),
            ])?,
        ),
        (
            "pg_stats",
            empty(&[
                ("schemaname", Text),
                ("tablename", Text),
                ("attname", Text),
                ("null_frac", Float4),
            ])?,
        ),
    ])
}
