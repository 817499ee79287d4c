//! Shared-prefix batching for inference: when every row of a batch starts with the same
//! tokens (an instruction placed first, the same in-context demonstrations), the prefix is
//! run once at batch size 1 and its keys and values are copied into every row's cache.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::{CacheReads, KvCache, Llama};

/// The shortest common prefix worth computing once; shorter ones are run per row.
pub const MIN_SHARED_PREFIX: usize = 8;

/// Length of the token prefix that every row shares, capped so that each row keeps at least
/// one token of its own (the last prompt position must be run per row to get its logits).
/// Zero for a single row or when the common prefix is shorter than [`MIN_SHARED_PREFIX`].
pub fn shared_prefix_len<S: AsRef<[u32]>>(rows: &[S]) -> usize {
    let Some((first, rest)) = rows.split_first() else {
        return 0;
    };
    if rest.is_empty() {
        return 0;
    }
    let first = first.as_ref();
    let mut n = rows.iter().map(|r| r.as_ref().len()).min().unwrap_or(0);
    n = n.saturating_sub(1);
    for r in rest {
        n = first[..n]
            .iter()
            .zip(r.as_ref())
            .take_while(|(a, b)| a == b)
            .count();
    }
    if n >= MIN_SHARED_PREFIX { n } else { 0 }
}

/// Runs `prefix` once, at batch size 1, and returns its final hidden states `[1, p, hidden]`
/// and a cache of `batch` rows that all hold it, with room for `capacity` positions.
/// `reads` names the weight copies its passes read, this one's included.
pub(crate) fn run_shared_prefix(
    model: &Llama,
    prefix: &[u32],
    batch: usize,
    capacity: usize,
    reads: CacheReads,
) -> Result<(Tensor, KvCache)> {
    let mut one = KvCache::new(model, 1, prefix.len())?.reading(reads);
    let ids = Tensor::from_slice(prefix, (1, prefix.len()), model.device())?;
    let hidden = model.forward_hidden(&ids, None, Some(&mut one), false)?;
    Ok((hidden, one.fan_out(batch, capacity)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_is_capped_below_the_shortest_row() {
        let a: Vec<u32> = (0..12).collect();
        let mut b: Vec<u32> = (0..10).collect();
        b.push(99);
        assert_eq!(shared_prefix_len(&[a.clone(), b.clone()]), 10);
        let short: Vec<u32> = (0..11).collect();
        assert_eq!(shared_prefix_len(&[a.clone(), short.clone()]), 10);
        assert_eq!(shared_prefix_len(&[short.clone(), a.clone()]), 10);
        assert_eq!(shared_prefix_len(&[a.clone(), a.clone()]), 11);
    }

    #[test]
    fn short_prefixes_and_single_rows_are_not_shared() {
        let a: Vec<u32> = (0..20).collect();
        let mut b: Vec<u32> = (0..7).collect();
        b.extend([50, 51, 52]);
        assert_eq!(shared_prefix_len(&[a.clone(), b]), 0);
        assert_eq!(shared_prefix_len(std::slice::from_ref(&a)), 0);
        assert_eq!(shared_prefix_len::<Vec<u32>>(&[]), 0);
    }
}
