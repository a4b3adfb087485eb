//! The errors of [`super::Member`]: [`SendError`] and [`Closed`], both
//! convertible to Corosync's [`CsError`].

use cpg_core::CsError;

/// Why [`super::Member::send`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SendError {
    /// Flow control or back-pressure (`TRY_AGAIN`): dispatch, then retry.
    #[error("would block: the send queue is full or this member's events are undispatched")]
    WouldBlock,
    /// The member is not (or no longer) in its group (`NOT_EXIST`).
    #[error("not joined")]
    NotJoined,
    /// Above the node's `max_message_size` (`TOO_BIG`).
    #[error("message too big")]
    TooBig,
    /// The handle is gone: finalized, evicted as a slow consumer, or the
    /// node stopped (`BAD_HANDLE`, `LIBRARY`, anything else).
    #[error("closed")]
    Closed,
}

impl From<CsError> for SendError {
    fn from(e: CsError) -> SendError {
        match e {
            CsError::TryAgain => SendError::WouldBlock,
            CsError::NotExist => SendError::NotJoined,
            CsError::TooBig => SendError::TooBig,
            _ => SendError::Closed,
        }
    }
}

impl From<SendError> for CsError {
    fn from(e: SendError) -> CsError {
        match e {
            SendError::WouldBlock => CsError::TryAgain,
            SendError::NotJoined => CsError::NotExist,
            SendError::TooBig => CsError::TooBig,
            SendError::Closed => CsError::Library,
        }
    }
}

/// The member's handle is gone (finalized, evicted, node stopped): no
/// more events. Holds what dispatch answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("closed ({0:?})")]
pub struct Closed(pub CsError);

impl From<Closed> for CsError {
    fn from(e: Closed) -> CsError {
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_cs_error() {
        for e in [
            SendError::WouldBlock,
            SendError::NotJoined,
            SendError::TooBig,
            SendError::Closed,
        ] {
            assert_eq!(SendError::from(CsError::from(e)), e);
        }
        assert_eq!(SendError::from(CsError::BadHandle), SendError::Closed);
        assert_eq!(
            CsError::from(Closed(CsError::BadHandle)),
            CsError::BadHandle
        );
    }
}
