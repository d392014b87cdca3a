//! Decoding helpers shared by every generative family: greedy choice with `torch.argmax`'s
//! tie rule, log-sum-exp in f64, and the top-k log-probabilities a [`crate::Generation`]
//! reports (the crate-level counterpart of candle-transformers' `generation`).

/// Index of the first maximum (torch.argmax semantics).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

pub fn log_sum_exp(xs: &[f32]) -> f64 {
    let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = xs.iter().map(|&x| (x as f64 - m).exp()).sum();
    m + s.ln()
}

/// The `k` most likely tokens with their log-probabilities, best first (ties by lower id).
pub fn top_k_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let lse = log_sum_exp(logits);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize]
            .partial_cmp(&logits[*a as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter()
        .map(|i| (i, (logits[i as usize] as f64 - lse) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn top_k_is_sorted_and_normalised() {
        let l = [0.0f32, 2.0, 1.0, 2.0, -1.0];
        let top = top_k_logprobs(&l, 3);
        assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let total: f64 = l.iter().map(|&x| (x as f64 - log_sum_exp(&l)).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!((top[0].1 as f64 - (2.0 - log_sum_exp(&l))).abs() < 1e-6);
    }
}
