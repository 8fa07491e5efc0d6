//! The embedding layer (Keras' `Embedding(vocab, dim, mask_zero=True)`, PyTorch's
//! `nn.Embedding`): token ids in, one learned vector per id out, plus the padding mask.
//!
//! ```text
//! forward:   e[t, b, :] = W[ids[t, b], :]                 ids (T, B), W (V, E), e (T, B, E)
//!            mask[t, b] = 1 if ids[t, b] ≠ 0 else 0        (id 0 = padding, mask_zero)
//! backward:  dW[v, :] = Σ_{(t, b): ids[t, b] = v} de[t, b, :]     (a scatter-add)
//! ```
//! The mask is what the recurrent layers above read to skip padded steps; the embedding itself
//! still looks up row 0 at padded steps, as Keras does (whatever arrives there as gradient is
//! added to row 0, and in a masked stack nothing arrives). Ids are checked once, here: an id
//! ≥ V is a bug in the data pipeline and panics with the offending value.

use crate::real::Real;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};

/// e = W\[ids\]: `weight` (V, E), `ids` (T, B) → (T, B, E).
pub fn forward<F: Real>(weight: &Array2<F>, ids: ArrayView2<u32>) -> Array3<F> {
    let (t_len, b) = ids.dim();
    let (vocab, dim) = weight.dim();
    let mut e = Array3::zeros((t_len, b, dim));
    for (mut row, &id) in e
        .view_mut()
        .into_shape_with_order((t_len * b, dim))
        .expect("fresh array is contiguous")
        .rows_mut()
        .into_iter()
        .zip(ids.iter())
    {
        assert!(
            (id as usize) < vocab,
            "token id {id} is outside the embedding's vocabulary of {vocab}"
        );
        row.assign(&weight.row(id as usize));
    }
    e
}

/// dW for `de` (T, B, E) arriving at the output of [`forward`]: (V, E).
pub fn backward<F: Real>(vocab: usize, ids: ArrayView2<u32>, de: ArrayView3<F>) -> Array2<F> {
    let dim = de.dim().2;
    let mut dw = Array2::zeros((vocab, dim));
    // forward was e[t, b, :] = W[ids[t, b], :], so every use of a row adds its gradient to it
    for (de_t, ids_t) in de.outer_iter().zip(ids.outer_iter()) {
        for (de_tb, &id) in de_t.outer_iter().zip(ids_t.iter()) {
            let mut row = dw.row_mut(id as usize);
            row += &de_tb;
        }
    }
    dw
}

/// The padding mask of `ids` (T, B): 1 where the id is not 0, else 0. (T, B).
pub fn mask<F: Real>(ids: ArrayView2<u32>) -> Array2<F> {
    ids.mapv(|id| if id == 0 { F::zero() } else { F::one() })
}

/// For every sequence (column of `ids`), the index of its last non-padding step, or None for
/// an all-padding sequence: (B).
pub fn last_real_step(ids: ArrayView2<u32>) -> Vec<Option<usize>> {
    ids.axis_iter(Axis(1))
        .map(|col| col.iter().rposition(|&id| id != 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, arr3};

    #[test]
    fn lookup_mask_and_scatter_add() {
        let w = arr2(&[[0.0f64, 0.0], [1.0, 2.0], [3.0, 4.0]]);
        let ids = arr2(&[[0u32, 2], [2, 1]]); // (T = 2, B = 2); sequence 0 is pre-padded
        let e = forward(&w, ids.view());
        assert_eq!(
            e,
            arr3(&[[[0.0, 0.0], [3.0, 4.0]], [[3.0, 4.0], [1.0, 2.0]]])
        );
        assert_eq!(mask::<f64>(ids.view()), arr2(&[[0.0, 1.0], [1.0, 1.0]]));
        // id 2 is used twice: its row gets the sum of both gradients
        let de = arr3(&[[[9.0, 9.0], [1.0, 1.0]], [[0.5, 0.25], [2.0, 3.0]]]);
        let dw = backward(3, ids.view(), de.view());
        assert_eq!(dw, arr2(&[[9.0, 9.0], [2.0, 3.0], [1.5, 1.25]]));
        assert_eq!(last_real_step(ids.view()), vec![Some(1), Some(1)]);
        assert_eq!(last_real_step(arr2(&[[3u32], [0]]).view()), vec![Some(0)]);
        assert_eq!(last_real_step(arr2(&[[0u32], [0]]).view()), vec![None]);
    }

    #[test]
    #[should_panic(expected = "token id 3 is outside the embedding's vocabulary of 3")]
    fn an_id_outside_the_vocabulary_is_caught() {
        forward(&Array2::<f32>::zeros((3, 2)), arr2(&[[3u32]]).view());
    }
}
