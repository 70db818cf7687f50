//! The split of the ordered targets into waves (docs/architecture.md §2): wave k covers the first
//! ⌈N·percent_k/100⌉ devices (or `count_k`, capped at N), never fewer than the wave before.

use crate::api::rollout::Wave;

/// Cumulative number of devices covered after each wave, for `n` targets.
pub fn cumulative_sizes(waves: &[Wave], n: u64) -> Vec<u64> {
    let mut previous = 0u64;
    waves
        .iter()
        .map(|wave| {
            let own = match (wave.percent, wave.count) {
                (Some(p), _) => {
                    let p = u128::from(p.clamp(0, 100) as u32);
                    (u128::from(n) * p).div_ceil(100) as u64
                }
                (None, Some(c)) => c.max(0) as u64,
                (None, None) => 0,
            };
            previous = own.max(previous).min(n);
            previous
        })
        .collect()
}

/// The wave (from 1) whose prefix first contains `position`; `sizes.len() + 1` when no wave
/// covers it (only possible when the last wave is below 100 %).
pub fn positional_wave(sizes: &[u64], position: u64) -> usize {
    sizes.partition_point(|&c| c <= position) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(p: i32) -> Wave {
        Wave {
            percent: Some(p),
            ..Wave::default()
        }
    }

    fn count(c: i64) -> Wave {
        Wave {
            count: Some(c),
            ..Wave::default()
        }
    }

    #[test]
    fn sizes_round_up_grow_and_cap() {
        let cases: Vec<(Vec<Wave>, u64, Vec<u64>)> = vec![
            (
                vec![pct(1), pct(10), pct(50), pct(100)],
                1000,
                vec![10, 100, 500, 1000],
            ),
            (vec![pct(1), pct(10), pct(100)], 7, vec![1, 1, 7]),
            (vec![pct(33), pct(100)], 10, vec![4, 10]),
            (vec![count(5), pct(10), pct(100)], 20, vec![5, 5, 20]),
            (vec![count(50), pct(100)], 20, vec![20, 20]),
            (vec![pct(100)], 0, vec![0]),
            (
                vec![count(1), count(10), pct(100)],
                1_000_000,
                vec![1, 10, 1_000_000],
            ),
        ];
        for (waves, n, expected) in cases {
            assert_eq!(cumulative_sizes(&waves, n), expected, "n={n}");
        }
    }

    #[test]
    fn positional_wave_is_the_first_covering_prefix() {
        let sizes = [10, 100, 100, 1000];
        assert_eq!(positional_wave(&sizes, 0), 1);
        assert_eq!(positional_wave(&sizes, 9), 1);
        assert_eq!(positional_wave(&sizes, 10), 2);
        assert_eq!(positional_wave(&sizes, 99), 2);
        assert_eq!(positional_wave(&sizes, 100), 4);
        assert_eq!(positional_wave(&sizes, 999), 4);
        assert_eq!(positional_wave(&sizes, 1000), 5);
    }
}
