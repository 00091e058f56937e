//! A COPY FROM STDIN whose server was lost: the client has been told (ERROR 08006) and keeps
//! sending what it had queued. As PostgreSQL after an error in copy-in mode, the rest is dropped:
//! for a COPY started by a simple Query, CopyData, CopyDone and CopyFail until the client sends
//! something else; for one started by Execute, every message until the Sync, which gets
//! ReadyForQuery. Message by message, without I/O: the relay feeds it headers and applies the
//! answer.

use pgmux_protocol::tags::frontend;

/// The dropping state.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LostCopy {
    /// The COPY came from Execute: drop everything up to and including the next Sync.
    until_sync: bool,
    /// Bytes of a message already begun (a CopyData half relayed when the server went) still to
    /// drop before the next header.
    pub(super) partial: usize,
}

/// What to do with the client's next message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Drop it (`total` bytes, header included), and stay.
    Drop,
    /// Drop this Sync and answer it with ReadyForQuery 'I': the COPY is over.
    DropAndAnswer,
    /// The COPY is over for the client: handle this message as usual.
    Leave,
}

impl LostCopy {
    /// A COPY lost mid-stream; `extended` when it was started by Execute, `partial` the unsent
    /// rest of a message cut by the loss.
    pub(super) fn new(extended: bool, partial: usize) -> Self {
        LostCopy { until_sync: extended, partial }
    }

    /// Decides on the client message with tag `tag`.
    pub(super) fn next(&self, tag: u8) -> Next {
        match (self.until_sync, tag) {
            (true, frontend::SYNC) => Next::DropAndAnswer,
            (true, _) => Next::Drop,
            (false, frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL) => Next::Drop,
            (false, _) => Next::Leave,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simple_copy_drops_copy_messages_until_something_else() {
        let c = LostCopy::new(false, 10);
        assert_eq!(c.partial, 10);
        for tag in [b'd', b'd', b'c', b'f'] {
            assert_eq!(c.next(tag), Next::Drop);
        }
        assert_eq!(c.next(b'Q'), Next::Leave);
        assert_eq!(c.next(b'S'), Next::Leave);
    }

    #[test]
    fn an_extended_copy_drops_everything_to_the_sync() {
        let c = LostCopy::new(true, 0);
        for tag in [b'd', b'c', b'H', b'P', b'B', b'E'] {
            assert_eq!(c.next(tag), Next::Drop);
        }
        assert_eq!(c.next(b'S'), Next::DropAndAnswer);
    }
}
