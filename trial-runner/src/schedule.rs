//! Learning-rate schedules, evaluated per optimizer step.

/// Cosine decay to zero after a linear warm-up, stepped every batch (as timm
/// does with `t_in_epochs=False`), so short trials still get a smooth curve.
#[derive(Debug, Clone, Copy)]
pub struct WarmupCosine {
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl WarmupCosine {
    /// The learning rate for 0-based step `step`.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        0.5 * self.base_lr * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_by_cosine() {
        let s = WarmupCosine {
            base_lr: 0.1,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert!((s.lr(0) - 0.01).abs() < 1e-12);
        assert!((s.lr(9) - 0.1).abs() < 1e-12);
        assert!((s.lr(10) - 0.1).abs() < 1e-12);
        assert!((s.lr(60) - 0.05).abs() < 1e-12);
        assert!(s.lr(109) < 1e-4);
        let lrs: Vec<f64> = (10..110).map(|t| s.lr(t)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn no_warmup_starts_at_base() {
        let s = WarmupCosine {
            base_lr: 1e-3,
            warmup_steps: 0,
            total_steps: 5,
        };
        assert_eq!(s.lr(0), 1e-3);
    }
}
