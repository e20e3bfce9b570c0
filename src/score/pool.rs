//! Output transforms: pooling a transformer's hidden states into one vector per row, L2
//! normalisation and softmax. Sums run in float64 and each result is rounded to float32 once,
//! so a row's vector does not depend on how long the other rows of its call were.

use crate::spec::Pool;

/// Pools hidden states `[rows, seq, hidden]` (row-major in `values`) into `[keep, hidden]`:
/// `lengths[r]` leading positions of row `r` are its tokens (the attention mask's ones, the
/// rest padding).
pub fn pool(
    values: &[f32],
    (seq, hidden): (usize, usize),
    lengths: &[usize],
    keep: usize,
    how: Pool,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(keep * hidden);
    for (r, &len) in lengths.iter().enumerate().take(keep) {
        let row = &values[r * seq * hidden..(r + 1) * seq * hidden];
        let len = len.clamp(1, seq);
        let position = |p: usize| &row[p * hidden..(p + 1) * hidden];
        match how {
            Pool::Cls => out.extend_from_slice(position(0)),
            Pool::Mean => {
                let mut sum = vec![0f64; hidden];
                for p in 0..len {
                    for (s, &v) in sum.iter_mut().zip(position(p)) {
                        *s += f64::from(v);
                    }
                }
                out.extend(sum.iter().map(|&s| (s / len as f64) as f32));
            }
            Pool::Max => {
                let mut max = position(0).to_vec();
                for p in 1..len {
                    for (m, &v) in max.iter_mut().zip(position(p)) {
                        *m = m.max(v);
                    }
                }
                out.extend(max);
            }
        }
    }
    out
}

/// Divides each `width`-long row of `values` by its L2 norm (a zero vector stays zero).
pub fn normalize(values: &mut [f32], width: usize) {
    for row in values.chunks_mut(width.max(1)) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        for v in row.iter_mut() {
            *v = (f64::from(*v) / norm) as f32;
        }
    }
}

/// Softmax over each `width`-long row of `values`, in place.
pub fn softmax(values: &mut [f32], width: usize) {
    for row in values.chunks_mut(width.max(1)) {
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        for (v, e) in row.iter_mut().zip(exps) {
            *v = (e / total) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_reads_only_each_rows_own_tokens() {
        // Two rows, three positions, two dimensions; row 0 has 2 tokens, row 1 has 1.
        let h = [
            1.0, 10.0, 3.0, 30.0, 99.0, 99.0, // row 0 (last position is padding)
            5.0, -5.0, 99.0, 99.0, 99.0, 99.0, // row 1
        ];
        assert_eq!(
            pool(&h, (3, 2), &[2, 1], 2, Pool::Mean),
            [2.0, 20.0, 5.0, -5.0]
        );
        assert_eq!(
            pool(&h, (3, 2), &[2, 1], 2, Pool::Max),
            [3.0, 30.0, 5.0, -5.0]
        );
        assert_eq!(pool(&h, (3, 2), &[2, 1], 1, Pool::Cls), [1.0, 10.0]);
    }

    #[test]
    fn normalized_rows_have_unit_length_and_softmax_rows_sum_to_one() {
        let mut v = [3.0, 4.0, 0.0, 0.0];
        normalize(&mut v, 2);
        assert_eq!(v, [0.6, 0.8, 0.0, 0.0]);
        let mut s = [0.0, 0.0, 1000.0, 0.0];
        softmax(&mut s, 2);
        assert_eq!(s, [0.5, 0.5, 1.0, 0.0]);
    }
}
