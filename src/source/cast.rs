//! Casting raw columns to their configured types, reporting each value that does not convert.

use deltalake::arrow::array::{Array, ArrayRef};
use deltalake::arrow::compute::{cast_with_options, CastOptions};
use deltalake::arrow::util::display::FormatOptions;

use crate::core::schema::ColumnType;
use crate::error::Result;

/// Casts `array` to `ty`. Returns the cast column (bad values as NULL) and the row indices whose
/// non-NULL input did not convert (unparsable number, date, or a value out of range).
///
/// # Errors
/// [`crate::Error::Arrow`] when Arrow has no cast between the two types at all.
pub(crate) fn cast_column(array: &ArrayRef, ty: ColumnType) -> Result<(ArrayRef, Vec<usize>)> {
    let target = ty.arrow_type();
    if array.data_type() == &target {
        return Ok((array.clone(), Vec::new()));
    }
    let options = CastOptions {
        safe: true,
        format_options: FormatOptions::default(),
    };
    let cast = cast_with_options(array, &target, &options)?;
    let bad = if cast.null_count() == array.null_count() {
        Vec::new()
    } else {
        (0..array.len())
            .filter(|&i| array.is_valid(i) && cast.is_null(i))
            .collect()
    };
    Ok((cast, bad))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{AsArray, StringArray};
    use deltalake::arrow::datatypes::{Date32Type, Float64Type, Int32Type};

    use super::*;

    fn strings(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    #[test]
    fn reports_only_values_that_fail_to_convert() {
        let (out, bad) = cast_column(
            &strings(&[Some("1"), None, Some("x"), Some("2.5")]),
            ColumnType::Int,
        )
        .unwrap();
        assert_eq!(bad, vec![2, 3]);
        assert_eq!(out.as_primitive::<Int32Type>().value(0), 1);
        assert!(out.is_null(1));
    }

    #[test]
    fn parses_doubles_dates_and_decimals() {
        let (d, bad) =
            cast_column(&strings(&[Some("0.25"), Some("1e3")]), ColumnType::Double).unwrap();
        assert!(bad.is_empty());
        assert_eq!(d.as_primitive::<Float64Type>().values(), &[0.25, 1000.0]);
        let (dt, bad) = cast_column(
            &strings(&[Some("2019-06-18"), Some("2019-13-01")]),
            ColumnType::Date,
        )
        .unwrap();
        assert_eq!(bad, vec![1]);
        assert_eq!(dt.as_primitive::<Date32Type>().value(0), 18065);
        let (_, bad) = cast_column(
            &strings(&[Some("12.34"), Some("123456789.1")]),
            ColumnType::Decimal {
                precision: 5,
                scale: 2,
            },
        )
        .unwrap();
        assert_eq!(
            bad,
            vec![1],
            "a value over the precision is an error, not a NULL"
        );
    }
}
