//! A message larger than one record travels in pieces: a first piece
//! (`MCAST`, `DELIVER`) that announces the whole length, then continuation
//! pieces (`MCAST_MORE` with the same `req_id`, `DELIVER_MORE`), each
//! non-empty, adding up exactly to the announced length.
//!
//! The pieces of one message are consecutive on their ring: a client sends
//! nothing else on the request ring between an `MCAST` and its last
//! `MCAST_MORE`, and the daemon writes nothing between a `DELIVER` and its
//! last `DELIVER_MORE` but `REPLY`s (which never belong to a message in
//! pieces). [`Assembly`] checks this on the receiving side; [`Split`] cuts
//! a message on the sending side.
//!
//! Pieces are about records, not the network: the engine fragments a
//! message for the network its own way.

use core::fmt;
use core::ops::Range;

use super::event::{deliver_more_piece_max, deliver_piece_max};
use super::request::{mcast_more_piece_max, mcast_piece_max};

/// Why a piece does not continue the message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceError {
    /// A first piece while another message is incomplete.
    InProgress,
    /// A continuation with no message in progress.
    NotStarted,
    /// A continuation with another `req_id` than its first piece.
    WrongRequest,
    /// The pieces add up to more than the announced length.
    Overrun,
    /// An empty piece of a non-empty message.
    Empty,
}

impl fmt::Display for PieceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PieceError::InProgress => "first piece while a message is incomplete",
            PieceError::NotStarted => "continuation without a first piece",
            PieceError::WrongRequest => "continuation of another request",
            PieceError::Overrun => "pieces longer than the message",
            PieceError::Empty => "empty piece",
        })
    }
}

impl core::error::Error for PieceError {}

/// Where a piece goes in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Its offset in the message.
    pub offset: u32,
    /// The message is whole with this piece.
    pub complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Current {
    tag: u32,
    total: u32,
    received: u32,
}

/// The receiving side's bookkeeping of one stream of pieces (one per ring).
/// A tag names the message: the `req_id` on the request ring, 0 on the
/// event ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Assembly {
    current: Option<Current>,
}

impl Assembly {
    /// No message in progress.
    pub const fn new() -> Assembly {
        Assembly { current: None }
    }

    /// Whether no message is in progress.
    pub const fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// The message in progress: (tag, bytes received, total).
    pub fn progress(&self) -> Option<(u32, u32, u32)> {
        self.current.map(|c| (c.tag, c.received, c.total))
    }

    /// The first piece (`piece_len` bytes) of a message of `total` bytes.
    ///
    /// # Errors
    /// [`PieceError::InProgress`], [`PieceError::Overrun`] (a piece longer
    /// than the message), [`PieceError::Empty`]; the assembly is unchanged.
    pub fn first(&mut self, tag: u32, total: u32, piece_len: usize) -> Result<Piece, PieceError> {
        if self.current.is_some() {
            return Err(PieceError::InProgress);
        }
        let len = u32::try_from(piece_len).map_err(|_| PieceError::Overrun)?;
        if len > total {
            return Err(PieceError::Overrun);
        }
        if len == 0 && total > 0 {
            return Err(PieceError::Empty);
        }
        let complete = len == total;
        if !complete {
            self.current = Some(Current {
                tag,
                total,
                received: len,
            });
        }
        Ok(Piece {
            offset: 0,
            complete,
        })
    }

    /// A continuation piece of `piece_len` bytes.
    ///
    /// # Errors
    /// [`PieceError::NotStarted`], [`PieceError::WrongRequest`],
    /// [`PieceError::Empty`], [`PieceError::Overrun`]; the assembly is
    /// unchanged.
    pub fn more(&mut self, tag: u32, piece_len: usize) -> Result<Piece, PieceError> {
        let cur = self.current.as_mut().ok_or(PieceError::NotStarted)?;
        if cur.tag != tag {
            return Err(PieceError::WrongRequest);
        }
        if piece_len == 0 {
            return Err(PieceError::Empty);
        }
        let len = u32::try_from(piece_len).map_err(|_| PieceError::Overrun)?;
        let received = cur
            .received
            .checked_add(len)
            .filter(|&r| r <= cur.total)
            .ok_or(PieceError::Overrun)?;
        let offset = cur.received;
        cur.received = received;
        let complete = received == cur.total;
        if complete {
            self.current = None;
        }
        Ok(Piece { offset, complete })
    }

    /// Drop the message in progress (its sender is gone).
    pub fn abort(&mut self) {
        self.current = None;
    }
}

/// The pieces of a message of `total` bytes, as ranges of it: first up
/// to `first_max` bytes, then up to `more_max` each. A message of 0 bytes
/// is one empty first piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    total: usize,
    first_max: usize,
    more_max: usize,
    at: usize,
    started: bool,
}

impl Split {
    /// Pieces of at most `first_max`, then `more_max` bytes (each at least
    /// 1).
    pub fn new(total: usize, first_max: usize, more_max: usize) -> Split {
        Split {
            total,
            first_max: first_max.max(1),
            more_max: more_max.max(1),
            at: 0,
            started: false,
        }
    }

    /// `MCAST` + `MCAST_MORE` pieces on a request ring whose records carry
    /// `body_max` bytes.
    pub fn mcast(total: usize, body_max: usize) -> Split {
        Split::new(
            total,
            mcast_piece_max(body_max),
            mcast_more_piece_max(body_max),
        )
    }

    /// `DELIVER` + `DELIVER_MORE` pieces on an event ring whose records
    /// carry `body_max` bytes, for a group name of `name_len` bytes.
    pub fn deliver(total: usize, body_max: usize, name_len: usize) -> Split {
        Split::new(
            total,
            deliver_piece_max(body_max, name_len),
            deliver_more_piece_max(body_max),
        )
    }
}

impl Iterator for Split {
    type Item = Range<usize>;
    fn next(&mut self) -> Option<Range<usize>> {
        let max = if self.started {
            if self.at >= self.total {
                return None;
            }
            self.more_max
        } else {
            self.started = true;
            self.first_max
        };
        let start = self.at;
        self.at = start.saturating_add(max).min(self.total);
        Some(start..self.at)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn whole_message_in_one_piece() {
        let mut a = Assembly::new();
        assert_eq!(
            a.first(1, 5, 5),
            Ok(Piece {
                offset: 0,
                complete: true
            })
        );
        assert!(a.is_idle());
        assert_eq!(
            a.first(2, 0, 0),
            Ok(Piece {
                offset: 0,
                complete: true
            })
        );
        assert_eq!(a.more(2, 1), Err(PieceError::NotStarted));
    }

    #[test]
    fn pieces_add_up() {
        let mut a = Assembly::new();
        assert_eq!(
            a.first(7, 10, 4),
            Ok(Piece {
                offset: 0,
                complete: false
            })
        );
        assert_eq!(a.progress(), Some((7, 4, 10)));
        assert_eq!(a.first(8, 3, 3), Err(PieceError::InProgress));
        assert_eq!(a.more(8, 3), Err(PieceError::WrongRequest));
        assert_eq!(a.more(7, 0), Err(PieceError::Empty));
        assert_eq!(a.more(7, 7), Err(PieceError::Overrun));
        assert_eq!(a.progress(), Some((7, 4, 10)), "unchanged by errors");
        assert_eq!(
            a.more(7, 3),
            Ok(Piece {
                offset: 4,
                complete: false
            })
        );
        assert_eq!(
            a.more(7, 3),
            Ok(Piece {
                offset: 7,
                complete: true
            })
        );
        assert!(a.is_idle());
        assert_eq!(a.first(1, 3, 4), Err(PieceError::Overrun));
        assert_eq!(a.first(1, 3, 0), Err(PieceError::Empty));
        assert_eq!(a.first(1, 3, usize::MAX), Err(PieceError::Overrun));
        a.first(1, u32::MAX, 1).unwrap();
        assert_eq!(a.more(1, usize::MAX), Err(PieceError::Overrun));
        a.abort();
        assert!(a.is_idle());
    }

    #[test]
    fn split() {
        let v: Vec<_> = Split::new(10, 4, 3).collect();
        assert_eq!(v, [0..4, 4..7, 7..10]);
        let mut s = Split::new(0, 4, 3);
        assert_eq!((s.next(), s.next()), (Some(0..0), None));
        let mut s = Split::new(4, 4, 3);
        assert_eq!((s.next(), s.next()), (Some(0..4), None));
        assert_eq!(Split::new(2, 0, 0).collect::<Vec<_>>(), [0..1, 1..2]);
        let body_max = 1 << 14;
        let mut s = Split::mcast(1 << 20, body_max);
        assert_eq!(s.next(), Some(0..body_max - 16));
        assert_eq!(s.next(), Some(body_max - 16..2 * body_max - 24));
        let mut s = Split::deliver(1 << 20, body_max, 3);
        assert_eq!(s.next(), Some(0..body_max - 19));
        assert_eq!(s.next(), Some(body_max - 19..2 * body_max - 19));
    }

    proptest! {
        #[test]
        fn split_then_assemble(total in 0usize..100_000, first in 0usize..5000, more in 0usize..5000, tag in any::<u32>()) {
            let mut a = Assembly::new();
            let mut next = 0;
            for (i, r) in Split::new(total, first, more).enumerate() {
                prop_assert_eq!(r.start, next);
                next = r.end;
                let p = if i == 0 {
                    prop_assert!(r.len() <= first.max(1));
                    a.first(tag, total as u32, r.len()).unwrap()
                } else {
                    prop_assert!(!r.is_empty() && r.len() <= more.max(1));
                    a.more(tag, r.len()).unwrap()
                };
                prop_assert_eq!(p.offset as usize, r.start);
                prop_assert_eq!(p.complete, r.end == total);
            }
            prop_assert_eq!(next, total);
            prop_assert!(a.is_idle());
        }
    }
}
