//! PostgreSQL column types and the lake types they land as.
//!
//! pgoutput and `COPY` both send values in PostgreSQL's text output format; each column's
//! text is cast to its lake type by the same cast as change files (`source::cast`), after
//! [`normalize`] has brought the few text forms Arrow does not read into one it does.
//!
//! | PostgreSQL                                     | lake (`type:`)   | notes                       |
//! |------------------------------------------------|------------------|-----------------------------|
//! | `smallint`, `integer`                          | `int`            |                             |
//! | `bigint`, `oid`                                | `long`           |                             |
//! | `real`, `double precision`                     | `double`         | `NaN`, `Infinity` kept      |
//! | `numeric(p,s)`, p ≤ 38, 0 ≤ s ≤ p              | `decimal(p,s)`   |                             |
//! | `numeric` (unconstrained, or p > 38, s < 0)    | `string`         | the exact digits, as text   |
//! | `text`, `varchar`, `char(n)`, `name`, `"char"` | `string`         | `char(n)` keeps its padding |
//! | `boolean`                                      | `boolean`        |                             |
//! | `date`                                         | `date`           |                             |
//! | `timestamp`                                    | `timestamp`      | read as UTC                 |
//! | `timestamptz`                                  | `timestamp`      | converted to UTC            |
//! | `uuid`, `json`, `jsonb`, `time`, `timetz`,     | `string`         | PostgreSQL's text form      |
//! | `interval`, enums                              |                  |                             |
//! | `bytea`                                        | `string`         | hex text, `\x0102`          |
//! | arrays                                         | `string`         | array literal, `{1,2,3}`    |
//! | anything else                                  | `string`         | with a warning naming it    |

use std::borrow::Cow;

use crate::core::schema::ColumnType;

/// How a column's text is read: its lake type and any rewrite of PostgreSQL's text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgType {
    /// The lake column type.
    pub lake: ColumnType,
    /// A `timestamptz`: its text carries a UTC offset, which may be hours only (`+05`).
    pub with_zone: bool,
}

/// Type OIDs of the built-in types mapped other than to text (`pg_type.h`).
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
}

/// Types whose text form is kept as the lake's string without a warning.
const TEXT_TYPES: [&str; 16] = [
    "text",
    "character varying",
    "character",
    "name",
    "\"char\"",
    "uuid",
    "json",
    "jsonb",
    "time without time zone",
    "time with time zone",
    "interval",
    "bytea",
    "inet",
    "cidr",
    "macaddr",
    "xml",
];

/// The lake type of a column of type `type_oid` with modifier `typmod` (`atttypmod`), named
/// `type_name` by `format_type` without its modifier, of `pg_type.typtype` `kind` (`e`: enum)
/// and `pg_type.typcategory` `category` (`A`: array). The second value is false for a type
/// read as text that is not one of the documented ones (the caller warns).
pub fn map_type(
    type_oid: u32,
    typmod: i32,
    type_name: &str,
    kind: &str,
    category: &str,
) -> (PgType, bool) {
    let plain = |lake| PgType {
        lake,
        with_zone: false,
    };
    let mapped = match type_oid {
        oid::BOOL => plain(ColumnType::Boolean),
        oid::INT2 | oid::INT4 => plain(ColumnType::Int),
        oid::INT8 | oid::OID => plain(ColumnType::Long),
        oid::FLOAT4 | oid::FLOAT8 => plain(ColumnType::Double),
        oid::DATE => plain(ColumnType::Date),
        oid::TIMESTAMP => plain(ColumnType::Timestamp),
        oid::TIMESTAMPTZ => PgType {
            lake: ColumnType::Timestamp,
            with_zone: true,
        },
        oid::NUMERIC => plain(numeric(typmod)),
        _ => {
            let known = kind == "e" || category == "A" || TEXT_TYPES.contains(&type_name);
            return (plain(ColumnType::String), known);
        }
    };
    (mapped, true)
}

/// `numeric(p,s)` as `decimal(p,s)` where Arrow's 128-bit decimal holds it; otherwise text,
/// which keeps every digit (unconstrained `numeric` has up to 131,072 digits before the point).
fn numeric(typmod: i32) -> ColumnType {
    // VARHDRSZ + (precision << 16 | scale), scale a signed 11-bit field (PostgreSQL 15+)
    if typmod < 4 {
        return ColumnType::String;
    }
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    if (1..=38).contains(&precision) && (0..=precision).contains(&scale) {
        ColumnType::Decimal {
            precision: precision as u8,
            scale: scale as i8,
        }
    } else {
        ColumnType::String
    }
}

/// `text` in PostgreSQL's output format, rewritten where Arrow's cast reads another form: a
/// `timestamptz` offset of hours only (`+05`, `-03`) gets its minutes (`+05:00`). Values that
/// no lake type holds (`infinity`, BC dates) are left as they are: the cast reports them.
pub fn normalize(ty: PgType, text: &str) -> Cow<'_, str> {
    if ty.with_zone {
        let bytes = text.as_bytes();
        let n = bytes.len();
        if n > 3
            && matches!(bytes[n - 3], b'+' | b'-')
            && bytes[n - 2].is_ascii_digit()
            && bytes[n - 1].is_ascii_digit()
        {
            return Cow::Owned(format!("{text}:00"));
        }
    }
    Cow::Borrowed(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(oid: u32, typmod: i32) -> ColumnType {
        map_type(oid, typmod, "", "b", "N").0.lake
    }

    #[test]
    fn numeric_maps_to_decimal_where_it_fits_and_to_text_otherwise() {
        let typmod = |p: i32, s: i32| ((p << 16) | (s & 0x7ff)) + 4;
        assert_eq!(
            lake(1700, typmod(10, 2)),
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            lake(1700, typmod(38, 0)),
            ColumnType::Decimal {
                precision: 38,
                scale: 0
            }
        );
        assert_eq!(lake(1700, -1), ColumnType::String);
        assert_eq!(lake(1700, typmod(39, 2)), ColumnType::String);
        assert_eq!(lake(1700, typmod(5, -2)), ColumnType::String);
        assert_eq!(lake(1700, typmod(3, 5)), ColumnType::String);
    }

    #[test]
    fn built_in_types_map_and_unknown_ones_are_text_with_a_warning() {
        assert_eq!(lake(16, -1), ColumnType::Boolean);
        assert_eq!(lake(21, -1), ColumnType::Int);
        assert_eq!(lake(23, -1), ColumnType::Int);
        assert_eq!(lake(20, -1), ColumnType::Long);
        assert_eq!(lake(700, -1), ColumnType::Double);
        assert_eq!(lake(1082, -1), ColumnType::Date);
        assert_eq!(lake(1114, -1), ColumnType::Timestamp);
        let (tz, known) = map_type(1184, -1, "timestamp with time zone", "b", "D");
        assert!(tz.with_zone && known);
        assert_eq!(
            map_type(2950, -1, "uuid", "b", "U"),
            (
                PgType {
                    lake: ColumnType::String,
                    with_zone: false
                },
                true
            )
        );
        assert!(map_type(99999, -1, "mood", "e", "E").1, "enums are text");
        assert!(
            map_type(1007, -1, "integer[]", "b", "A").1,
            "arrays are text"
        );
        assert!(!map_type(600, -1, "point", "b", "G").1, "point warns");
    }

    #[test]
    fn hour_offsets_get_their_minutes() {
        let tz = PgType {
            lake: ColumnType::Timestamp,
            with_zone: true,
        };
        assert_eq!(
            normalize(tz, "2024-01-02 03:04:05+00"),
            "2024-01-02 03:04:05+00:00"
        );
        assert_eq!(
            normalize(tz, "2024-01-02 03:04:05.5-03"),
            "2024-01-02 03:04:05.5-03:00"
        );
        assert_eq!(
            normalize(tz, "2024-01-02 03:04:05+05:30"),
            "2024-01-02 03:04:05+05:30"
        );
        let plain = PgType {
            lake: ColumnType::String,
            with_zone: false,
        };
        assert_eq!(normalize(plain, "a+00"), "a+00");
    }
}
