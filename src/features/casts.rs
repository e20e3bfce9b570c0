//! Which casts batchscore makes from a column's type to a model input's, and which of them
//! can fail on a value (and so are checked row by row, rejecting the rows they fail on).

use datafusion::arrow::datatypes::DataType;

/// Whether batchscore casts `from` to `to` (types only; values may still fail at run time,
/// e.g. a string that is not a number).
pub fn castable(from: &DataType, to: &DataType) -> bool {
    let from = match from {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    let scalar_source = from.is_numeric()
        || matches!(
            from,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Null
                | DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        );
    scalar_source && datafusion::arrow::compute::can_cast_types(from, to)
}

/// Whether casting `from` to `to` can fail on a value: text to anything else, and into an
/// integer type from a float, a decimal or a wider integer. Other casts (int to float,
/// float64 to float32, bool to number) always succeed and need no per-row check.
pub fn cast_can_fail(from: &DataType, to: &DataType) -> bool {
    let from = match from {
        DataType::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    let text = matches!(
        from,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    let bits = |t: &DataType| match t {
        DataType::Int8 | DataType::UInt8 => 8,
        DataType::Int16 | DataType::UInt16 => 16,
        DataType::Int32 | DataType::UInt32 => 32,
        DataType::Int64 => 63,
        _ => 64,
    };
    match to {
        DataType::Utf8 => false,
        DataType::Int32 | DataType::Int64 => {
            let fractional = from.is_floating()
                || matches!(
                    from,
                    DataType::Decimal32(..)
                        | DataType::Decimal64(..)
                        | DataType::Decimal128(..)
                        | DataType::Decimal256(..)
                );
            text || fractional || from.is_integer() && bits(from) > bits(to)
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn casts_that_batchscore_allows() {
        assert!(castable(&DataType::Int16, &DataType::Float32));
        assert!(castable(&DataType::Decimal128(8, 2), &DataType::Float32));
        assert!(castable(&DataType::Boolean, &DataType::Float64));
        assert!(castable(&DataType::Utf8View, &DataType::Utf8));
        assert!(castable(&DataType::Int64, &DataType::Utf8));
        assert!(castable(
            &DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)),
            &DataType::Utf8
        ));
        assert!(!castable(&DataType::Date32, &DataType::Float32));
        assert!(!castable(
            &DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new(
                "i",
                DataType::Float32,
                true
            ))),
            &DataType::Float32
        ));
    }

    #[test]
    fn only_casts_that_can_fail_are_checked_per_row() {
        use DataType::*;
        assert!(cast_can_fail(&Utf8, &Float32));
        assert!(cast_can_fail(&Utf8View, &Int64));
        assert!(cast_can_fail(&Int64, &Int32));
        assert!(cast_can_fail(&UInt64, &Int64));
        assert!(cast_can_fail(&Float64, &Int64));
        assert!(cast_can_fail(&Decimal128(8, 2), &Int32));
        assert!(!cast_can_fail(&Float64, &Float32));
        assert!(!cast_can_fail(&Int64, &Float32));
        assert!(!cast_can_fail(&Int16, &Int64));
        assert!(!cast_can_fail(&UInt32, &Int64));
        assert!(!cast_can_fail(&Boolean, &Int32));
        assert!(!cast_can_fail(&Int64, &Utf8));
    }
}
