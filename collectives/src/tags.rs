//! Every message tag used on a communicator's transport, in one place, so
//! that no two kinds of traffic can match each other's messages.
//!
//! | tags            | carried by                                                |
//! |-----------------|-----------------------------------------------------------|
//! | 1 ..= 8         | the collectives, one tag each                             |
//! | 100             | [`CHECK`]: signature checks before a collective (check mode) |
//! | 1024 ..= 32767  | [`RESERVABLE`]: ranges handed out by [`Communicator::reserve_tags`] |
//!
//! One tag per collective is enough: the collectives of one communicator
//! run one after another, and messages between two ranks on one tag arrive
//! in the order they were sent.
//!
//! Code that sends its own messages on a communicator's transport (a
//! pipeline passing activations between stages, say) must not pick numbers
//! of its own: it asks for a range with [`Communicator::reserve_tags`].
//!
//! [`Communicator::reserve_tags`]: crate::Communicator::reserve_tags

use crate::check::Collective;
use crate::error::CollectiveError;
use std::cell::Cell;
use std::ops::RangeInclusive;

/// Message tag. MPI guarantees at least 32767 tags.
pub type Tag = u16;

/// Signature checks in check mode.
pub const CHECK: Tag = 100;

/// Tags left for traffic outside the collectives; 32767 is the largest tag
/// every MPI library must accept.
pub const RESERVABLE: RangeInclusive<Tag> = 1024..=32767;

/// The tag of every message of collective `c`.
pub(crate) fn collective(c: Collective) -> Tag {
    c as Tag
}

/// What a message with `tag` belongs to, for reports about a stuck wait.
pub(crate) fn describe(tag: Tag) -> String {
    match Collective::ALL.into_iter().find(|&c| collective(c) == tag) {
        Some(c) => c.name().to_string(),
        None if tag == CHECK => "a collective signature check".into(),
        None if RESERVABLE.contains(&tag) => {
            format!("a point-to-point message (reserved tag {tag})")
        }
        None => format!("a point-to-point message (tag {tag})"),
    }
}

/// Consecutive tags reserved on one communicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagRange {
    first: Tag,
    len: u16,
}

impl TagRange {
    pub fn len(&self) -> usize {
        self.len.into()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`th tag of the range. Panics when `i` is outside it: a tag past
    /// the end belongs to someone else's range.
    pub fn get(&self, i: usize) -> Tag {
        assert!(
            i < self.len(),
            "tag {i} of a range of {} reserved tags",
            self.len
        );
        self.first + i as Tag
    }

    pub fn contains(&self, tag: Tag) -> bool {
        (self.first..self.first + self.len).contains(&tag)
    }

    pub fn iter(&self) -> impl Iterator<Item = Tag> {
        self.first..self.first + self.len
    }
}

/// Hands out [`RESERVABLE`] in call order: ranks that reserve in the same
/// order get the same tags, without a message.
#[derive(Debug)]
pub(crate) struct Reservations {
    next: Cell<u32>,
}

impl Default for Reservations {
    fn default() -> Self {
        Reservations {
            next: Cell::new(u32::from(*RESERVABLE.start())),
        }
    }
}

impl Reservations {
    pub(crate) fn reserve(&self, n: usize, rank: usize) -> Result<TagRange, CollectiveError> {
        let first = self.next.get();
        let left = u32::from(*RESERVABLE.end()) + 1 - first;
        match u32::try_from(n) {
            Ok(len) if len <= left => {
                self.next.set(first + len);
                Ok(TagRange {
                    first: first as Tag,
                    len: len as u16,
                })
            }
            _ => Err(CollectiveError::TagsExhausted {
                rank,
                wanted: n,
                left: left as usize,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_disjoint_and_stop_at_the_end() {
        let r = Reservations::default();
        let a = r.reserve(2, 0).unwrap();
        let b = r.reserve(3, 0).unwrap();
        assert_eq!((a.get(0), a.get(1)), (1024, 1025));
        assert_eq!(b.iter().collect::<Vec<_>>(), [1026, 1027, 1028]);
        assert!(!a.contains(1026) && b.contains(1026));
        let all = r.reserve(32767 - 1028, 0).unwrap();
        assert_eq!(all.get(all.len() - 1), 32767);
        let e = r.reserve(1, 3).unwrap_err();
        assert!(
            e.to_string().contains("rank 3") && e.to_string().contains("1 message tags"),
            "{e}"
        );
        assert!(r.reserve(0, 0).unwrap().is_empty());
    }

    #[test]
    fn tags_name_their_traffic() {
        assert_eq!(describe(collective(Collective::Allgather)), "allgather");
        assert_eq!(describe(CHECK), "a collective signature check");
        assert!(describe(1030).contains("reserved tag 1030"));
        for c in Collective::ALL {
            assert!(collective(c) != CHECK && !RESERVABLE.contains(&collective(c)));
        }
    }
}
