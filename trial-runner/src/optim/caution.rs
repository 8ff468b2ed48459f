//! The `caution` option of timm's optimizers (Cautious Optimizers,
//! <https://arxiv.org/abs/2411.16085>): the components of an update whose
//! sign disagrees with a reference direction (usually the gradient) are
//! zeroed, and the rest rescaled by the inverse of the kept fraction.

use tch::Tensor;

/// `update *= mask / max(mean(mask), 1e-3)` with `mask = (update * direction > 0)`,
/// as timm computes it.
pub(crate) fn apply_caution(update: &mut Tensor, direction: &Tensor) {
    let mut mask = (&*update * direction).gt(0.0).to_kind(update.kind());
    let scale = mask.mean(None).clamp_min(1e-3);
    let _ = mask.g_div_(&scale);
    let _ = update.g_mul_(&mask);
}
