//! Labels: the enums whose variants tag a count (`reason:bad_value`, `transport:udp`), and the
//! arrays of counts indexed by them.
//!
//! `labels!` declares such an enum once, with its tag key and each variant's name, and derives its
//! `ALL` list; `ByLabel` holds one value per variant and is indexed by the enum itself, so an
//! array always has exactly as many entries as its enum has variants and no bare number ever
//! indexes it (a hand-written `[u64; 3]` or an `e as usize` into a shorter array cannot happen).
//!
//! A leaf: imports nothing from the rest of the crate.

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// An enum declared with `labels!`.
pub(crate) trait Label: Copy + Eq + 'static {
    /// The tag's key: `reason` in `reason:bad_value`.
    const KEY: &'static str;
    /// Every variant, in declaration order: `index` is the position here.
    const ALL: &'static [Self];
    /// The tag's value: `bad_value`.
    fn name(self) -> &'static str;
    fn index(self) -> usize;
}

/// Declares a label enum: `labels! { pub enum ParseError: "reason" { NoPipe => "no_pipe", .. } }`
/// gives the enum, `ParseError::ALL`, `ParseError::name` and the `Label` impl.
macro_rules! labels {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $key:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code)]
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// The variant as it appears in telemetry tags (and flags).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl $crate::label::Label for $name {
            const KEY: &'static str = $key;
            const ALL: &'static [Self] = &$name::ALL;

            fn name(self) -> &'static str {
                $name::name(self)
            }

            fn index(self) -> usize {
                // Declaration order without explicit discriminants: the position in `ALL`.
                self as usize
            }
        }
    };
}
pub(crate) use labels;

/// One `T` per variant of `L`, indexed by `L`. `N` is `L::ALL.len()` (checked when one is made);
/// `by!` spells the type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ByLabel<L, T, const N: usize> {
    values: [T; N],
    label: PhantomData<L>,
}

/// `by!(ParseError)` is one `u64` per parse error; `by!(Transport, CloseReason)` one per pair.
macro_rules! by {
    ($l:ty) => {
        $crate::label::ByLabel<$l, u64, { <$l as $crate::label::Label>::ALL.len() }>
    };
    ($l:ty, $($rest:ty),+) => {
        $crate::label::ByLabel<
            $l,
            $crate::label::by!($($rest),+),
            { <$l as $crate::label::Label>::ALL.len() },
        >
    };
}
pub(crate) use by;

impl<L: Label, T: Copy + Default, const N: usize> Default for ByLabel<L, T, N> {
    fn default() -> Self {
        const { assert!(N == L::ALL.len(), "a ByLabel holds one value per label") };
        ByLabel {
            values: [T::default(); N],
            label: PhantomData,
        }
    }
}

impl<L: Label, T, const N: usize> Index<L> for ByLabel<L, T, N> {
    type Output = T;

    fn index(&self, l: L) -> &T {
        &self.values[l.index()]
    }
}

impl<L: Label, T, const N: usize> IndexMut<L> for ByLabel<L, T, N> {
    fn index_mut(&mut self, l: L) -> &mut T {
        &mut self.values[l.index()]
    }
}

impl<L: Label, T, const N: usize> ByLabel<L, T, N> {
    /// Each label with its value, in declaration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (L, &T)> {
        L::ALL.iter().copied().zip(&self.values)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (L, &mut T)> {
        L::ALL.iter().copied().zip(&mut self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    labels! {
        /// A label for the tests.
        enum Colour: "colour" {
            Red => "red",
            Green => "green",
            Blue => "blue",
        }
    }

    labels! {
        enum Size: "size" {
            Small => "s",
            Large => "l",
        }
    }

    #[test]
    fn all_names_and_indexes_follow_the_declaration() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::Green, Colour::Blue]);
        assert_eq!(Colour::Green.name(), "green");
        assert_eq!(<Colour as Label>::KEY, "colour");
        for (i, c) in Colour::ALL.iter().enumerate() {
            assert_eq!(Label::index(*c), i);
        }
    }

    #[test]
    fn counts_are_indexed_by_their_labels_and_nest() {
        let mut by_colour = <by!(Colour)>::default();
        by_colour[Colour::Blue] += 3;
        by_colour[Colour::Red] += 1;
        let seen: Vec<(Colour, u64)> = by_colour.iter().map(|(c, &n)| (c, n)).collect();
        assert_eq!(
            seen,
            [(Colour::Red, 1), (Colour::Green, 0), (Colour::Blue, 3)]
        );
        let mut pairs = <by!(Colour, Size)>::default();
        pairs[Colour::Green][Size::Large] += 2;
        assert_eq!(pairs[Colour::Green][Size::Large], 2);
        assert_eq!(pairs[Colour::Green][Size::Small], 0);
    }
}
