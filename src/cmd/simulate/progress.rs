//! Progress bars per wave while a simulation runs (indicatif), drawn on stdout only when it is
//! a terminal; otherwise nothing is drawn and stdout holds the report alone.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use otau_operator::api::rollout::RolloutStatus;
use otau_operator::engine::Micros;

use super::report::duration_text;
use super::sim::Progress;

/// No progress at all (`--output json`, tests).
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn update(&mut self, _: &RolloutStatus, _: Micros) {}
    fn finish(&mut self, _: &RolloutStatus) {}
}

/// One bar per started wave: finished devices out of the wave's devices, with the counts and
/// the virtual time.
pub struct Bars {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    waves: usize,
}

impl Bars {
    /// Bars on stdout (hidden by indicatif when stdout is not a terminal) for a rollout of
    /// `waves` waves.
    pub fn stdout(waves: usize) -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: Vec::new(),
            waves,
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix:<18} [{bar:32}] {pos:>7}/{len:<7} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }
}

impl Progress for Bars {
    fn update(&mut self, status: &RolloutStatus, elapsed: Micros) {
        for (i, wave) in status.waves.iter().enumerate() {
            if self.bars.len() <= i {
                let bar = self
                    .multi
                    .add(ProgressBar::new(wave.counts.targeted.max(0) as u64));
                bar.set_style(Self::style());
                let name = wave
                    .name
                    .as_ref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default();
                bar.set_prefix(format!("wave {}/{}{name}", i + 1, self.waves));
                self.bars.push(bar);
            }
            let bar = &self.bars[i];
            if bar.is_finished() {
                continue;
            }
            let c = &wave.counts;
            let done = c.succeeded + c.failed + c.aborted + c.timed_out + c.skipped + c.invalid;
            bar.set_length(c.targeted.max(0) as u64);
            bar.set_position(done.max(0) as u64);
            bar.set_message(format!(
                "ok {} failed {} timeout {} in flight {} | T+{}",
                c.succeeded,
                c.failed,
                c.timed_out,
                c.notified + c.in_progress,
                duration_text(elapsed)
            ));
            if wave.completed_at.is_some() {
                bar.finish();
            }
        }
    }

    fn finish(&mut self, _: &RolloutStatus) {
        for bar in &self.bars {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
