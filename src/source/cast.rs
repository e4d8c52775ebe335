//! Casting raw columns to their configured types, reporting each value that does not convert.

use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::compute::{cast_with_options, CastOptions};
use deltalake::arrow::datatypes::{DataType, Decimal128Type};
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
    let mut bad: Vec<usize> = if cast.null_count() == array.null_count() {
        Vec::new()
    } else {
        (0..array.len())
            .filter(|&i| array.is_valid(i) && cast.is_null(i))
            .collect()
    };
    if let ColumnType::Decimal { scale, .. } = ty {
        // Arrow's cast rounds digits past the scale; a value it would round is bad input.
        let rounded: Vec<usize> = match array.data_type() {
            DataType::Utf8 => {
                let text = array.as_string::<i32>();
                (0..text.len())
                    .filter(|&i| text.is_valid(i) && past_scale(text.value(i), scale))
                    .collect()
            }
            DataType::Decimal128(_, from) if *from > scale => {
                let unit = 10i128.pow((*from - scale) as u32);
                let values = array.as_primitive::<Decimal128Type>();
                (0..values.len())
                    .filter(|&i| values.is_valid(i) && values.value(i) % unit != 0)
                    .collect()
            }
            _ => Vec::new(),
        };
        if !rounded.is_empty() {
            bad.extend(rounded);
            bad.sort_unstable();
            bad.dedup();
        }
    }
    Ok((cast, bad))
}

/// Whether the decimal text `text` has more significant fractional digits than `scale`
/// (trailing zeros do not count; an exponent shifts the point): `1.239` past scale 2, `1.230`
/// and `12.3e-1` not. Text that is not a number is left to the cast.
fn past_scale(text: &str, scale: i8) -> bool {
    let text = text.trim().trim_start_matches(['+', '-']);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => match text[at + 1..].parse::<i64>() {
            Ok(e) => (&text[..at], e),
            Err(_) => return false,
        },
        None => (text, 0),
    };
    let fraction = mantissa.split_once('.').map_or("", |(_, f)| f);
    let digits = fraction.trim_end_matches('0').len() as i64;
    digits - exponent > i64::from(scale)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{AsArray, StringArray};
    use deltalake::arrow::datatypes::{Date32Type, Decimal128Type, Float64Type, Int32Type};

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

    #[test]
    fn a_decimal_with_digits_past_its_scale_is_bad_not_rounded() {
        let dec = ColumnType::Decimal {
            precision: 12,
            scale: 2,
        };
        let texts = [
            Some("1.239"),
            Some("1.23"),
            Some("1.230"),
            Some("-7.5"),
            None,
        ];
        let (out, bad) = cast_column(&strings(&texts), dec).unwrap();
        assert_eq!(bad, vec![0], "1.239 is past scale 2");
        assert_eq!(out.as_primitive::<Decimal128Type>().value(2), 123);
        // The rule with an exponent (Arrow's cast refuses exponents for decimals anyway).
        assert!(!past_scale("12.3e-1", 2) && !past_scale("1.234e1", 2));
        assert!(!past_scale("0.001e2", 2) && !past_scale("1.2345e2", 2));
        assert!(past_scale("1.23456e2", 2));
        assert!(past_scale("-0.005", 2) && !past_scale("abc", 2));
        // A Parquet decimal of a larger scale: only values with digits past the target's.
        let wide: ArrayRef = Arc::new(
            deltalake::arrow::array::Decimal128Array::from(vec![Some(12_300), Some(12_345), None])
                .with_precision_and_scale(12, 4)
                .unwrap(),
        );
        let (out, bad) = cast_column(&wide, dec).unwrap();
        assert_eq!(bad, vec![1]);
        assert_eq!(out.as_primitive::<Decimal128Type>().value(0), 123);
    }
}
