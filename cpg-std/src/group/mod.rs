//! The idiomatic Rust layer beside [`crate::Cpg`]: a [`Member`] is one
//! process in one group, an owned handle that leaves on drop; it sends
//! with [`Member::send`] ([`SendError`]) and receives [`Event`]s
//! ([`Message`], [`Membership`], [`Ring`]) from [`Member::try_next`],
//! [`Member::next_timeout`], [`Member::recv`] or [`Member::events`]. Its
//! eventfd ([`std::os::fd::AsFd`]) plugs into a reactor.
//!
//! | module | owns |
//! |---|---|
//! | `member` | [`Member`], [`JoinOptions`], [`Events`] |
//! | `event` | [`Event`], [`Message`], [`Membership`], [`Ring`] |
//! | `error` | [`SendError`], [`Closed`] and their `CsError` conversions |
//!
//! Built only on `Cpg`'s public functions (the callbacks queue the events).
//!
//! Copies: a [`Message`]'s bytes are copied once, from the handle's queue
//! into a shared `Arc<[u8]>` (clones share it, no further copy). Zero
//! copies is not possible without changing the handle layer: its
//! `EventSink` lends each queued event only for the length of a callback,
//! and the payload lies in the transport's own frame type (generic, erased
//! behind the node), so sharing it would need that layer to hand out a
//! type-erased owned payload; a message the application keeps would also
//! pin the transport's frame buffer.

mod error;
mod event;
mod member;

pub use self::error::{Closed, SendError};
pub use self::event::{Event, Membership, Message, Ring};
pub use self::member::{Events, JoinOptions, Member};
