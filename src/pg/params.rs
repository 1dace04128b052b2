//! The `$1 … $n` parameters of a prepared statement, bound by substituting
//! SQL literals for the placeholders (found by the tokenizer, so a `$1`
//! inside a string or a comment stays as it is).

use bytes::Bytes;
use pgwire::api::Type;

use super::error::{Failure, error_info};
use super::text::{placeholders, splice, tokens};

/// Days from 1970-01-01 to 2000-01-01, Postgres' epoch.
const PG_EPOCH_DAYS: i64 = 10_957;

/// The number of parameters `sql` takes (the highest `$n`).
pub(crate) fn count(sql: &str) -> usize {
    tokens(sql)
        .map(|t| {
            placeholders(&t)
                .iter()
                .map(|(_, _, n)| *n)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A `'…'` string literal.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn bad(n: usize, ty: &Type, why: impl std::fmt::Display) -> Failure {
    error_info(
        "22P02",
        format!("parameter ${n} is not a valid {}: {why}", ty.name()),
    )
}

fn fixed<const N: usize>(n: usize, ty: &Type, raw: &[u8]) -> Result<[u8; N], Failure> {
    raw.try_into()
        .map_err(|_| bad(n, ty, format!("{} bytes, not {N}", raw.len())))
}

/// The SQL literal of parameter `$n` of type `ty`, sent as `raw` in the
/// binary or text format.
fn literal(n: usize, ty: &Type, raw: Option<&Bytes>, binary: bool) -> Result<String, Failure> {
    let Some(raw) = raw else {
        return Ok("NULL".into());
    };
    if !binary {
        let text = std::str::from_utf8(raw).map_err(|e| bad(n, ty, e))?;
        return Ok(match *ty {
            Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => text
                .trim()
                .parse::<i64>()
                .map_err(|e| bad(n, ty, e))?
                .to_string(),
            Type::FLOAT4 | Type::FLOAT8 => {
                let v = text.trim().parse::<f64>().map_err(|e| bad(n, ty, e))?;
                float_literal(v)
            }
            Type::NUMERIC => {
                let t = text.trim();
                if t.parse::<f64>().is_err() || t.contains(|c: char| c.is_alphabetic()) {
                    return Err(bad(n, ty, format!("'{t}'")));
                }
                t.to_string()
            }
            Type::BOOL => match text.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "1" | "on" | "yes" | "y" => "TRUE".into(),
                "f" | "false" | "0" | "off" | "no" | "n" => "FALSE".into(),
                other => return Err(bad(n, ty, format!("'{other}'"))),
            },
            Type::DATE => format!("DATE {}", quote(text)),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => format!("TIMESTAMP {}", quote(text)),
            _ => quote(text),
        });
    }
    Ok(match *ty {
        Type::BOOL => (if fixed::<1>(n, ty, raw)?[0] != 0 {
            "TRUE"
        } else {
            "FALSE"
        })
        .into(),
        Type::INT2 => i16::from_be_bytes(fixed(n, ty, raw)?).to_string(),
        Type::INT4 => i32::from_be_bytes(fixed(n, ty, raw)?).to_string(),
        Type::OID => u32::from_be_bytes(fixed(n, ty, raw)?).to_string(),
        Type::INT8 => i64::from_be_bytes(fixed(n, ty, raw)?).to_string(),
        Type::FLOAT4 => float_literal(f64::from(f32::from_be_bytes(fixed(n, ty, raw)?))),
        Type::FLOAT8 => float_literal(f64::from_be_bytes(fixed(n, ty, raw)?)),
        Type::DATE => {
            let days = i64::from(i32::from_be_bytes(fixed(n, ty, raw)?)) + PG_EPOCH_DAYS;
            let date = chrono::DateTime::from_timestamp(days * 86_400, 0)
                .ok_or_else(|| bad(n, ty, "out of range"))?;
            format!("DATE '{}'", date.format("%Y-%m-%d"))
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(fixed(n, ty, raw)?)
                .checked_add(PG_EPOCH_DAYS * 86_400_000_000)
                .ok_or_else(|| bad(n, ty, "out of range"))?;
            let at = chrono::DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| bad(n, ty, "out of range"))?;
            format!("TIMESTAMP '{}'", at.format("%Y-%m-%d %H:%M:%S%.6f"))
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
            quote(std::str::from_utf8(raw).map_err(|e| bad(n, ty, e))?)
        }
        _ => {
            return Err(error_info(
                "0A000",
                format!(
                    "parameter ${n} of type {} in the binary format is not supported; \
                     send it as text",
                    ty.name()
                ),
            ));
        }
    })
}

fn float_literal(v: f64) -> String {
    if v.is_finite() {
        // `{:?}` keeps a `.0`, so the literal stays a float.
        format!("{v:?}")
    } else if v.is_nan() {
        "CAST('NaN' AS DOUBLE)".into()
    } else if v > 0.0 {
        "CAST('Infinity' AS DOUBLE)".into()
    } else {
        "CAST('-Infinity' AS DOUBLE)".into()
    }
}

/// `sql` with each `$n` replaced by the literal of `values[n - 1]`, whose
/// type is `types[n - 1]` and format binary when `binary(n - 1)`.
pub(crate) fn bind(
    sql: &str,
    types: &[Type],
    values: &[Option<Bytes>],
    binary: impl Fn(usize) -> bool,
) -> Result<String, Failure> {
    let Some(tokens) = tokens(sql) else {
        return Ok(sql.to_string());
    };
    let mut edits = Vec::new();
    for (start, end, n) in placeholders(&tokens) {
        let value = values.get(n - 1).ok_or_else(|| {
            error_info(
                "08P01",
                format!(
                    "the statement uses ${n}, but only {} parameters were bound",
                    values.len()
                ),
            )
        })?;
        let ty = types.get(n - 1).cloned().unwrap_or(Type::UNKNOWN);
        edits.push((start, end, literal(n, &ty, value.as_ref(), binary(n - 1))?));
    }
    Ok(splice(sql, &edits))
}

/// A literal of type `ty`, standing in for a parameter.
fn sample(ty: &Type) -> &'static str {
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID | Type::NUMERIC => "0",
        Type::FLOAT4 | Type::FLOAT8 => "0.0",
        Type::BOOL => "TRUE",
        Type::DATE => "DATE '2000-01-01'",
        Type::TIMESTAMP | Type::TIMESTAMPTZ => "TIMESTAMP '2000-01-01 00:00:00'",
        _ => "''",
    }
}

/// `sql` with every `$n` replaced by a sample value of its type: planned
/// to learn the result columns before any value is bound. (`NULL` would
/// not do: `WHERE id <= NULL` plans to no input at all.)
pub(crate) fn with_samples(sql: &str, types: &[Type]) -> String {
    match tokens(sql) {
        Some(tokens) => {
            let edits: Vec<_> = placeholders(&tokens)
                .into_iter()
                .map(|(s, e, n)| {
                    (
                        s,
                        e,
                        sample(types.get(n - 1).unwrap_or(&Type::TEXT)).to_string(),
                    )
                })
                .collect();
            splice(sql, &edits)
        }
        None => sql.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_text_parameters_become_literals() {
        let sql = "SELECT * FROM t WHERE k = $1 AND s = $2 AND f > $3 AND b = $4 AND x = '$1'";
        let values = vec![
            Some(Bytes::from(3i64.to_be_bytes().to_vec())),
            Some(Bytes::from_static(b"it's")),
            Some(Bytes::from(0.5f64.to_be_bytes().to_vec())),
            None,
        ];
        let types = [Type::INT8, Type::TEXT, Type::FLOAT8, Type::BOOL];
        assert_eq!(
            bind(sql, &types, &values, |_| true).unwrap(),
            "SELECT * FROM t WHERE k = 3 AND s = 'it''s' AND f > 0.5 AND b = NULL AND x = '$1'"
        );
        let text = vec![
            Some(Bytes::from_static(b"42")),
            Some(Bytes::from_static(b"a")),
        ];
        assert_eq!(
            bind("SELECT $1, $2", &[Type::INT4, Type::UNKNOWN], &text, |_| {
                false
            })
            .unwrap(),
            "SELECT 42, 'a'"
        );
        assert!(
            bind(
                "SELECT $1",
                &[Type::INT4],
                &[Some(Bytes::from_static(b"x"))],
                |_| false
            )
            .is_err()
        );
        assert!(bind("SELECT $2", &[], &[None], |_| false).is_err());
        assert_eq!(count("SELECT $1, $3 -- $9"), 3);
        assert_eq!(
            with_samples("SELECT $1, $2", &[Type::INT8, Type::TEXT]),
            "SELECT 0, ''"
        );
    }
}
