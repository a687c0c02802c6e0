//! The `alphabetical` policy: byte order of the values.

use super::{Candidate, Order};

/// `policy = { alphabetical = { order = "asc" | "desc" } }`.
#[derive(Debug, Clone, Copy)]
pub struct AlphabeticalPolicy {
    order: Order,
}

impl AlphabeticalPolicy {
    /// A policy with the given order.
    pub fn new(order: Order) -> AlphabeticalPolicy {
        AlphabeticalPolicy { order }
    }

    /// The configured order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// `asc` picks the byte-greatest value, `desc` the byte-least (uppercase sorts before
    /// lowercase, `9` after `10`). Among equal values the byte-least tag wins.
    pub fn select(&self, candidates: &[Candidate<'_>]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            let better = match best {
                None => true,
                Some(j) => {
                    let b = &candidates[j];
                    let by_value = match self.order {
                        Order::Asc => c.value.as_bytes().cmp(b.value.as_bytes()),
                        Order::Desc => b.value.as_bytes().cmp(c.value.as_bytes()),
                    };
                    by_value
                        .then_with(|| b.tag.as_bytes().cmp(c.tag.as_bytes()))
                        .is_gt()
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }
}
