//! The context tables' layout.

use super::*;

#[test]
fn the_per_sample_half_of_a_context_fills_exactly_one_half_cache_line() {
    assert_eq!(std::mem::size_of::<Slot>(), 32);
    assert_eq!(std::mem::align_of::<Slot>(), 32);
    assert_eq!(
        std::mem::size_of::<Meta>(),
        16,
        "the rest fits in half as much"
    );
}
